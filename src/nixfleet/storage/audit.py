"""Where the audit log is stored: an append-only, hash-chained table.

Appends in one process are serialized by the caller's lock; across replicas (and processes
such as the CLI) by the database's write lock, taken before the head is read. The unique
`prev_hash` stays the last guard: a second writer that chained after the same head fails
its INSERT and tries again, so the chain never forks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import desc, insert, select
from sqlalchemy.exc import IntegrityError

from nixfleet.core import audit as chain
from nixfleet.storage.db import Database
from nixfleet.storage.tables import audit_log as t

_APPEND_TRIES = 5


async def append(db: Database, entry: dict[str, Any]) -> dict[str, Any]:
    """Return the stored entry, chained after the current head."""
    for attempt in range(_APPEND_TRIES):
        try:
            async with db.engine.begin() as conn:
                # Replicas take turns: the head read here is still the head at the INSERT.
                await db.write_lock(conn, "audit_log")
                head = (
                    await conn.execute(select(t.c.seq, t.c.hash).order_by(desc(t.c.seq)).limit(1))
                ).first()
                seq, prev = (head[0] + 1, head[1]) if head else (1, chain.GENESIS)
                row = {**entry, "seq": seq, "prev_hash": prev}
                row["hash"] = chain.entry_hash(prev, row)
                await conn.execute(insert(t).values(**row))
            return row
        except IntegrityError:
            if attempt == _APPEND_TRIES - 1:
                raise
    raise AssertionError("unreachable")


async def search(
    db: Database,
    *,
    actor: str = "",
    action: str = "",
    host: str = "",
    since: float | None = None,
    until: float | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Return matching entries, newest first; empty filters match everything."""
    query = select(t)
    if actor:
        query = query.where(t.c.actor == actor)
    if action:
        query = query.where(t.c.action == action)
    if host:
        query = query.where(t.c.host == host)
    if since is not None:
        query = query.where(t.c.at >= since)
    if until is not None:
        query = query.where(t.c.at < until)
    query = query.order_by(desc(t.c.seq)).limit(limit)
    async with db.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def all_in_order(db: Database, batch: int = 1000) -> AsyncIterator[dict[str, Any]]:
    """Yield every entry in seq order, a batch at a time (for verify and export)."""
    after = 0
    while True:
        query = select(t).where(t.c.seq > after).order_by(t.c.seq).limit(batch)
        async with db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(query)]
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]


async def verify(db: Database) -> tuple[int, str, chain.Break | None]:
    """Return (entries verified, head hash, first break or None) for the stored chain."""
    return chain.verify([row async for row in all_in_order(db)])
