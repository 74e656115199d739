"""Where the dashboard replicas sharing one database are stored, each with a lease.

A replica renews its lease every third of the lease time. One whose lease ran out is
dead (killed, frozen, cut off): whichever replica notices first releases its hosts, so
they show offline and their running commands enter the reconnect window.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, false, func, insert, or_, select, update

from nixfleet.core.commands import ACTIVE_STATES, CommandState
from nixfleet.storage.asyncengine import AsyncConnection
from nixfleet.storage.db import Database
from nixfleet.storage.hosts import open_reconnect_windows_of
from nixfleet.storage.tables import commands, hosts, replicas


@dataclass(frozen=True)
class Census:
    hosts: dict[bool, int]  # online → how many
    commands: dict[str, int]  # queued / dispatched / running → how many
    # deploy state → how many hosts; derived from the rows by the dashboard (Presence).
    deploy: dict[str, int] = field(default_factory=dict)


_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_CHUNK = 500  # ids per IN (…): SQLite's bound-parameter limit


def new_replica_id() -> str:
    """Return a fresh id for this process: the machine's name and a random suffix."""
    name = _UNSAFE.sub("-", socket.gethostname())[:32].strip("-") or "replica"
    return f"{name}-{secrets.token_hex(4)}"


async def register(db: Database, replica: str, now: float, lease_s: float) -> None:
    """Store (or refresh) this replica's row with a fresh lease."""
    async with db.engine.begin() as conn:
        await conn.execute(delete(replicas).where(replicas.c.id == replica))
        await conn.execute(
            insert(replicas).values(
                id=replica, started_at=now, renewed_at=now, lease_until=now + lease_s
            )
        )


async def renew(db: Database, replica: str, now: float, lease_s: float) -> bool:
    """Extend this replica's lease; return False if its row is gone (it was taken for dead).

    Through the lease's own connection (Database.lease), never queued behind requests.
    """
    async with db.lease.begin() as conn:
        res = await conn.execute(
            update(replicas)
            .where(replicas.c.id == replica)
            .values(renewed_at=now, lease_until=now + lease_s)
        )
    return bool(res.rowcount == 1)


async def live(db: Database, now: float) -> list[dict[str, Any]]:
    """Return the replicas whose lease runs, oldest first."""
    query = select(replicas).where(replicas.c.lease_until >= now).order_by(replicas.c.started_at)
    async with db.reader.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def release_dead(db: Database, me: str, now: float) -> list[str]:
    """Release the hosts of replicas whose lease ran out; return the host ids released.

    1. Delete the expired replica rows; the DELETE is the claim, so when two replicas
       notice the same death only one releases its hosts.
    2. Their hosts go offline and belong to nobody, and so do hosts online with no
       holder at all (rows from before replicas had ids).
    3. The active commands of those hosts enter the reconnect window, as if each agent
       had disconnected now.
    """
    async with db.engine.begin() as conn:
        dead = await conn.execute(
            delete(replicas)
            .where(replicas.c.lease_until < now, replicas.c.id != me)
            .returning(replicas.c.id)
        )
        dead_ids = [r[0] for r in dead]
        orphaned = and_(hosts.c.online.is_(True), hosts.c.replica.is_(None))
        owned = hosts.c.replica.in_(dead_ids) if dead_ids else false()
        return await _release(conn, or_(owned, orphaned), now)


async def release_own(db: Database, me: str, now: float) -> list[str]:
    """Release this replica's hosts and delete its row (a clean shutdown)."""
    async with db.engine.begin() as conn:
        await conn.execute(delete(replicas).where(replicas.c.id == me))
        return await _release(conn, hosts.c.replica == me, now)


async def _release(conn: AsyncConnection, which: Any, now: float) -> list[str]:
    res = await conn.execute(
        update(hosts)
        .where(which)
        .values(online=False, replica=None, last_seen=now)
        .returning(hosts.c.id)
    )
    released = [r[0] for r in res]
    await open_reconnect_windows_of(conn, released, now)
    return released


async def reclaim(db: Database, me: str, host_ids: Sequence[str], now: float) -> list[str]:
    """Take back hosts this replica still holds after it was taken for dead; return them.

    Only hosts nobody took meanwhile: an agent that reconnected elsewhere stays there. Their
    active commands leave the reconnect window again.
    """
    taken: list[str] = []
    async with db.engine.begin() as conn:
        for i in range(0, len(host_ids), _CHUNK):
            res = await conn.execute(
                update(hosts)
                .where(hosts.c.id.in_(host_ids[i : i + _CHUNK]), hosts.c.replica.is_(None))
                .values(online=True, replica=me, last_seen=now)
                .returning(hosts.c.id)
            )
            taken += [r[0] for r in res]
        for i in range(0, len(taken), _CHUNK):
            await conn.execute(
                update(commands)
                .where(
                    commands.c.host_id.in_(taken[i : i + _CHUNK]),
                    commands.c.state.in_([s.value for s in ACTIVE_STATES]),
                )
                .values(disconnected_at=None)
            )
    return taken


async def census(db: Database) -> Census:
    """Return the whole fleet's host and open-command counts."""
    open_states = [CommandState.QUEUED.value, *(s.value for s in ACTIVE_STATES)]
    async with db.reader.connect() as conn:
        host_rows = await conn.execute(
            select(hosts.c.online, func.count()).group_by(hosts.c.online)
        )
        command_rows = await conn.execute(
            select(commands.c.state, func.count())
            .where(commands.c.state.in_(open_states))
            .group_by(commands.c.state)
        )
        counts = Census({True: 0, False: 0}, dict.fromkeys(open_states, 0))
        counts.hosts.update({bool(online): n for online, n in host_rows})
        counts.commands.update({state: n for state, n in command_rows})
    return counts
