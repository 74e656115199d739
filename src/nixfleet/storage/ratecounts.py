"""Request-rate counters in PostgreSQL, so every replica counts against one limit.

The same sliding-window counter the `limits` library keeps in memory or Redis: a count
per window, and the previous window's count weighted by how much of it still overlaps
the sliding window. One statement takes a hit: it adds one to this window's row only if
the weighted total stays within the limit (`INSERT … ON CONFLICT … DO UPDATE … WHERE`,
which locks the row, so two replicas hitting at once cannot both take the last place),
and RETURNING says whether it did. A refused hit is not counted, as in `limits`.

Rows live in an UNLOGGED table (no write-ahead log: a crash forgets the current window,
nothing else) and are pruned once neither window they belong to is current.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from sqlalchemy import delete, select, text

from nixfleet.storage.db import Database
from nixfleet.storage.tables import rate_counts

PRUNE_EVERY_S = 60.0

_HIT = text(
    """
    WITH prev AS (
      SELECT coalesce(
        (SELECT hits FROM rate_counts WHERE key = :key AND win = :win - 1), 0
      ) * :weight AS weighted
    )
    INSERT INTO rate_counts AS c (key, win, hits, expires_at)
    SELECT :key, :win, 1, :expires_at FROM prev WHERE prev.weighted + 1 <= :amount
    ON CONFLICT (key, win) DO UPDATE SET hits = c.hits + 1
    WHERE (SELECT weighted FROM prev) + c.hits + 1 <= :amount
    RETURNING hits
    """
)


def retry_after(amount: int, window_s: float, elapsed: float, prev: int, current: int) -> float:
    """Return the seconds until one more hit fits under the sliding window's limit."""
    left = window_s - elapsed  # until this window ends and the previous one drops out
    if current + 1 > amount or prev == 0:
        return left
    # prev * (window_s - t) / window_s + current + 1 <= amount, solved for the elapsed t
    t = window_s * (1 - (amount - 1 - current) / prev)
    return min(left, max(0.0, t - elapsed))


class WindowCounts:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._pruned_at = 0.0

    async def hit(self, key: str, amount: int, window_s: int) -> int | None:
        """Count one hit of key; return None if it fits, else whole seconds to wait."""
        now = self.clock()
        win = math.floor(now / window_s)
        elapsed = now - win * window_s
        weight = (window_s - elapsed) / window_s
        params = {
            "key": key[:160],
            "win": win,
            "weight": weight,
            "amount": amount,
            "expires_at": (win + 2) * window_s,
        }
        async with self.db.engine.begin() as conn:
            taken = (await conn.execute(_HIT, params)).first()
            if taken is None:
                rows = await conn.execute(
                    select(rate_counts.c.win, rate_counts.c.hits).where(
                        rate_counts.c.key == params["key"],
                        rate_counts.c.win.in_([win - 1, win]),
                    )
                )
                counts = {w: h for w, h in rows}
            if now - self._pruned_at > PRUNE_EVERY_S:
                self._pruned_at = now
                await conn.execute(delete(rate_counts).where(rate_counts.c.expires_at < now))
        if taken is not None:
            return None
        wait = retry_after(amount, window_s, elapsed, counts.get(win - 1, 0), counts.get(win, 0))
        return max(1, math.ceil(wait))
