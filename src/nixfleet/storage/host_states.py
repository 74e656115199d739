"""Where each host's state history is stored: one row per change of one field (online,
deploy state, reboot), at most ROWS_PER_HOST per host and pruned by age.

A row is stored only when it says something new: a value (or detail) other than the
host's newest row of that field. Several replicas see the same change (each reads the
fleet's target itself); the check and the insert run under one lock across processes, so
the change is stored once, whichever replica writes first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from nixfleet.core.commands import ACTIVATING, ACTIVE_STATES
from nixfleet.storage.asyncengine import AsyncConnection
from nixfleet.storage.db import Database
from nixfleet.storage.tables import commands, host_states, hosts

# A host that flaps every second fills its own history, never the table: its oldest rows
# go first. 200 rows are weeks of an ordinary host's changes.
ROWS_PER_HOST = 200
_LOCK = "nixfleet.host_states"

Latest = dict[tuple[str, str], tuple[str, str]]  # (host id, field) -> (value, detail)


async def latest(db: Database, host_ids: Collection[str]) -> Latest:
    """Return {(host id, field): (value, detail)} of the newest row of each field."""
    if not host_ids:
        return {}
    async with db.engine.connect() as conn:
        return await _latest(conn, host_ids)


# Built once (every connect, report and command end stores a change): the newest row of
# each field of some hosts, and a host's rows past its newest ROWS_PER_HOST.
_NEWEST = (
    select(func.max(host_states.c.id))
    .where(host_states.c.host_id.in_(bindparam("ids", expanding=True)))
    .group_by(host_states.c.host_id, host_states.c.field)
)
_LATEST = select(
    host_states.c.host_id, host_states.c.field, host_states.c.value, host_states.c.detail
).where(host_states.c.id.in_(_NEWEST))
_KEEP = (
    select(host_states.c.id)
    .where(host_states.c.host_id == bindparam("host_id"))
    .order_by(host_states.c.id.desc())
    .limit(ROWS_PER_HOST)
)
_TRIM = delete(host_states).where(
    host_states.c.host_id == bindparam("host_id"),
    host_states.c.id.not_in(_KEEP.scalar_subquery()),
)


async def _latest(conn: AsyncConnection, host_ids: Collection[str]) -> Latest:
    rows = await conn.execute(_LATEST, {"ids": list(host_ids)})
    return {(r.host_id, r.field): (r.value, r.detail) for r in rows}


async def record(db: Database, rows: Sequence[dict[str, Any]]) -> bool:
    """Store the state changes ({host_id, at, field, value, detail}) that differ from the
    host's newest row of their field, and trim each host's rows; return False (nothing
    stored) when one of the hosts no longer exists."""
    if not rows:
        return True
    try:
        await _record(db, rows)
    except IntegrityError:
        return False
    return True


async def _record(db: Database, rows: Sequence[dict[str, Any]]) -> None:
    async with db.engine.begin() as conn:
        # One writer at a time per host across replicas: read the newest rows and insert
        # under the same lock, or two replicas would both read "behind" and both store
        # "current". Per host, not fleet-wide: one lock for every host's history had the
        # replicas' sessions queueing for it (issue 18; docs/benchmarks.md).
        ids = {r["host_id"] for r in rows}
        await db.write_locks(conn, (f"{_LOCK}:{host_id}" for host_id in ids))
        newest = await _latest(conn, ids)
        fresh = []
        for row in rows:
            key, said = (row["host_id"], row["field"]), (row["value"], row["detail"])
            if newest.get(key) != said:
                newest[key] = said
                fresh.append(row)
        if not fresh:
            return
        await conn.execute(insert(host_states), fresh)
        for host_id in {r["host_id"] for r in fresh}:
            await _trim(conn, host_id)


async def _trim(conn: AsyncConnection, host_id: str) -> None:
    await conn.execute(_TRIM, {"host_id": host_id})


async def settling(db: Database, host_ids: Collection[str]) -> set[str]:
    """Return which of these hosts are between systems: a command that may change the
    running system (core.commands.ACTIVATING) is active, or it finished after the host's
    last report, so what the dashboard derives from that report is not the outcome yet."""
    if not host_ids:
        return set()
    query = (
        select(commands.c.host_id)
        .distinct()
        .join(hosts, hosts.c.id == commands.c.host_id)
        .where(
            commands.c.host_id.in_(list(host_ids)),
            commands.c.kind.in_([k.value for k in ACTIVATING]),
            or_(
                commands.c.state.in_([s.value for s in ACTIVE_STATES]),
                and_(
                    commands.c.dispatched_at.is_not(None),
                    commands.c.finished_at > hosts.c.last_seen,
                ),
            ),
        )
    )
    async with db.engine.connect() as conn:
        return {r[0] for r in await conn.execute(query)}


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
