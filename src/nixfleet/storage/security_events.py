"""Where security events are stored, and the summaries the security panel draws."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, desc, func, insert, select

from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.storage.db import Database
from nixfleet.storage.tables import security_events as t


def _row(event: SecurityEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "kind": event.kind.value,
        "outcome": event.outcome[:16],
        "detail": event.detail[:64],
        "address": event.address[:64],
        "user": event.user[:100],
        "host": event.host[:63],
    }


async def add_many(db: Database, events: list[SecurityEvent]) -> None:
    """Store a batch of events in one transaction."""
    if events:
        async with db.engine.begin() as conn:
            await conn.execute(insert(t), [_row(e) for e in events])


async def recent(db: Database, since: float, limit: int = 50) -> list[dict[str, Any]]:
    """Return the newest events at or after since, newest first."""
    query = select(t).where(t.c.at >= since).order_by(desc(t.c.at), desc(t.c.id)).limit(limit)
    async with db.reader.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def failure_times(db: Database, since: float) -> list[float]:
    """Return the times of auth failures at or after since (the panel buckets them)."""
    query = select(t.c.at).where(t.c.kind == EventKind.AUTH_FAILURE.value, t.c.at >= since)
    async with db.reader.connect() as conn:
        return [r[0] for r in await conn.execute(query)]


async def top_addresses(db: Database, since: float, limit: int = 10) -> list[dict[str, Any]]:
    """Return the addresses with most refused events since, with their counts."""
    n = func.count().label("count")
    query = (
        select(t.c.address, n)
        .where(t.c.at >= since, t.c.outcome == "refused", t.c.address != "")
        .group_by(t.c.address)
        .order_by(desc(n), t.c.address)
        .limit(limit)
    )
    async with db.reader.connect() as conn:
        return [{"address": r[0], "count": r[1]} for r in await conn.execute(query)]


async def prune(db: Database, before: float) -> int:
    """Delete events older than before (retention); return how many went."""
    async with db.engine.begin() as conn:
        return (await conn.execute(delete(t).where(t.c.at < before))).rowcount or 0
