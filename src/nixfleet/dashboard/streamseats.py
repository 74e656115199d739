"""The event-stream caps held across replicas (PostgreSQL): a seat per open stream.

The broadcaster checks this process's own streams first (no database work for a refusal
it can see alone); then a seat in the database counts every replica's streams against the
per-session, per-address and total caps (storage/streamseats.py).

Seats are renewed for the streams this process really serves: those of its subscribers,
and those taken in the last moments whose stream has not subscribed yet. A seat whose
stream never started (the browser left before the first byte) is not renewed and lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from nixfleet.storage import streamseats as store
from nixfleet.storage.db import Database, failure_reason

log = logging.getLogger("nixfleet.sse")
# How long a seat may wait for its stream to subscribe before it is no longer renewed.
PENDING_S = 30.0


class SharedSeats:
    def __init__(
        self,
        db: Database,
        replica: str,
        caps: store.Caps,
        lease_s: float,
        serving: Callable[[], Iterable[str | None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.replica = replica
        self.caps = caps
        self.lease_s = lease_s
        self.serving = serving  # the seats of this process's open streams
        self.clock = clock
        self._pending: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    async def take(self, session: str, address: str) -> tuple[str | None, str | None]:
        """Return (seat, None), or (None, why the stream is refused)."""
        now = self.clock()
        seat, refusal = await store.take(
            self.db, self.replica, session, address, self.caps, now, self.lease_s
        )
        if seat is not None:
            self._pending[seat] = now
        return seat, refusal

    def give_back(self, seat: str) -> None:
        """Free a closed stream's seat; called from a stream's `finally`, so it returns at
        once (a cancelled stream cannot wait for the database): the delete runs apart."""
        self._pending.pop(seat, None)
        task = asyncio.get_running_loop().create_task(self._delete([seat]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delete(self, seats: list[str]) -> None:
        try:
            await store.give_back(self.db, seats)
        except Exception as exc:  # the seat's lease lapses instead
            log.warning("sse: a stream seat was not given back: %s", failure_reason(exc))

    def held(self) -> list[str]:
        """Return the seats to renew: open streams' and recent ones still starting."""
        now = self.clock()
        self._pending = {s: at for s, at in self._pending.items() if now - at < PENDING_S}
        open_ = {s for s in self.serving() if s}
        for seat in open_:
            self._pending.pop(seat, None)
        return sorted(open_ | set(self._pending))

    async def renew(self) -> None:
        await store.renew(self.db, self.held(), self.clock(), self.lease_s)

    def start(self) -> None:
        self._renewer = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew()
            except Exception as exc:
                log.warning("sse: stream seats not renewed: %s", failure_reason(exc))

    async def shutdown(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        with contextlib.suppress(Exception):
            await store.give_back(self.db, self.held())
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
