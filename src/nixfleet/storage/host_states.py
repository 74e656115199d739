"""Where each host's state history is stored: one row per change of one field (online,
deploy state, reboot), at most ROWS_PER_HOST per host and pruned by age."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from nixfleet.storage.db import Database
from nixfleet.storage.tables import host_states

# A host that flaps every second fills its own history, never the table: its oldest rows
# go first. 200 rows are weeks of an ordinary host's changes.
ROWS_PER_HOST = 200


async def latest(db: Database, host_ids: Collection[str]) -> dict[tuple[str, str], str]:
    """Return {(host id, field): value} of the newest row of each field of these hosts."""
    if not host_ids:
        return {}
    newest = (
        select(func.max(host_states.c.id))
        .where(host_states.c.host_id.in_(list(host_ids)))
        .group_by(host_states.c.host_id, host_states.c.field)
    )
    query = select(host_states.c.host_id, host_states.c.field, host_states.c.value).where(
        host_states.c.id.in_(newest)
    )
    async with db.engine.connect() as conn:
        rows = await conn.execute(query)
    return {(r.host_id, r.field): r.value for r in rows}


async def record(db: Database, rows: Sequence[dict[str, Any]]) -> bool:
    """Insert state changes ({host_id, at, field, value, detail}) and trim each host's
    rows; return False (nothing stored) when one of the hosts no longer exists."""
    if not rows:
        return True
    try:
        await _record(db, rows)
    except IntegrityError:
        return False
    return True


async def _record(db: Database, rows: Sequence[dict[str, Any]]) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(insert(host_states), list(rows))
        for host_id in {r["host_id"] for r in rows}:
            keep = (
                select(host_states.c.id)
                .where(host_states.c.host_id == host_id)
                .order_by(host_states.c.id.desc())
                .limit(ROWS_PER_HOST)
            )
            await conn.execute(
                delete(host_states).where(
                    host_states.c.host_id == host_id,
                    host_states.c.id.not_in(keep.scalar_subquery()),
                )
            )


async def for_host(db: Database, host_id: str, limit: int) -> list[dict[str, Any]]:
    """Return a host's newest state changes, newest first."""
    query = (
        select(host_states.c.at, host_states.c.field, host_states.c.value, host_states.c.detail)
        .where(host_states.c.host_id == host_id)
        .order_by(host_states.c.id.desc())
        .limit(limit)
    )
    async with db.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def prune(db: Database, cutoff: float) -> int:
    """Delete every row older than cutoff; return how many."""
    async with db.engine.begin() as conn:
        res = await conn.execute(
            delete(host_states).where(host_states.c.at < cutoff).returning(host_states.c.id)
        )
        return len(res.fetchall())
