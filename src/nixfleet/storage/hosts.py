"""Where hosts are stored: identity, token hash, metadata and last reported status."""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Update, bindparam, delete, insert, null, or_, select, update
from sqlalchemy.exc import IntegrityError

from nixfleet.core.commands import ACTIVE_STATES
from nixfleet.core.errors import Conflict, NotFound
from nixfleet.storage.asyncengine import AsyncConnection
from nixfleet.storage.db import Database
from nixfleet.storage.tables import commands, hosts

PUBLIC = [c for c in hosts.c if c.name != "token_hash"]
_ACTIVE = [s.value for s in ACTIVE_STATES]
_CHUNK = 500  # ids per IN (…): SQLite's bound-parameter limit


async def add(
    db: Database, host_id: str, token_hash: str | None, now: float, meta: dict[str, Any]
) -> None:
    """Insert a host (with a token, or none yet) or raise Conflict if the id is taken."""
    state = "active" if token_hash else "none"
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                insert(hosts).values(
                    id=host_id, token_hash=token_hash, identity_state=state, created_at=now, **meta
                )
            )
    except IntegrityError:
        raise Conflict(
            f"store: host {host_id!r} already exists; choose another name or remove that host first"
        ) from None


async def remove(db: Database, host_id: str) -> None:
    """Delete a host with its commands and output, or raise NotFound."""
    async with db.engine.begin() as conn:
        res = await conn.execute(delete(hosts).where(hosts.c.id == host_id))
    if res.rowcount == 0:
        raise NotFound(f"store: no host {host_id!r}; check the name (it may have been removed)")


# Built once (each command reads its host): building it each call cost about as much CPU
# as running it.
ONE = select(*PUBLIC).where(hosts.c.id == bindparam("host_id"))


async def get(db: Database, host_id: str) -> dict[str, Any]:
    """Return one host's public row or raise NotFound."""
    async with db.reader.connect() as conn:
        row = (await conn.execute(ONE, {"host_id": host_id})).first()
    if row is None:
        raise NotFound(f"store: no host {host_id!r}; check the name (it may have been removed)")
    return dict(row._mapping)


async def list_all(db: Database) -> list[dict[str, Any]]:
    """Return every host's public row, ordered by id."""
    async with db.reader.connect() as conn:
        rows = await conn.execute(select(*PUBLIC).order_by(hosts.c.id))
    return [dict(r._mapping) for r in rows]


async def ids(db: Database) -> set[str]:
    """Return the id of every host (cheap: one column)."""
    async with db.reader.connect() as conn:
        return set((await conn.execute(select(hosts.c.id))).scalars())


_LINK = select(hosts.c.connected_at, hosts.c.connection).where(hosts.c.id == bindparam("host_id"))


async def mark_connected(
    db: Database,
    host_id: str,
    status: dict[str, Any],
    now: float,
    replica: str | None = None,
    *,
    link: dict[str, Any] | None = None,
    window_s: float = 3600,
    fields: dict[str, str] | None = None,
    host_labels: dict[str, str] | None = None,
) -> None:
    """Record that a host's agent connected to replica, or raise NotFound (host removed).

    One transaction for what a handshake writes: the status it reported, the connection's
    health (link: the agent's breaker and TLS report, see _link_health), the metadata
    fields its configuration sets and, when given, its own labels. On PostgreSQL each
    transaction is several round trips, and thousands of agents reconnect at once after a
    restart. The newest connection wins: the host now belongs to this replica.
    """
    values: dict[str, Any] = {
        "online": True,
        "connected_at": now,
        "last_seen": now,
        "status": status,
        "replica": replica,
        **(fields or {}),
    }
    if host_labels is not None:
        values["host_labels"] = host_labels
    async with db.engine.begin() as conn:
        row = (await conn.execute(_LINK, {"host_id": host_id})).first()
        if row is None:
            raise NotFound(f"store: no host {host_id!r}; check the name (it may have been removed)")
        if link is not None:
            values["connection"] = _link_health(row, now, link, window_s)
        await conn.execute(update(hosts).where(hosts.c.id == host_id).values(**values))


def _link_health(row: Any, now: float, report: dict[str, Any], window_s: float) -> dict[str, Any]:
    """Return a host's connection health once a new connection reports.

    1. A connection of a host that was connected before counts as a reconnect; only
       those of the last window_s are kept.
    2. The agent's breaker report replaces the last one; a TLS failure replaces the last
       one only when there is a new one, so the row keeps showing it.
    """
    health = dict(row.connection or {})
    recent = [t for t in health.get("reconnects", []) if t > now - window_s]
    if row.connected_at is not None:
        recent.append(now)
    health["reconnects"] = recent[-500:]
    health["breaker"] = report.get("breaker")
    if report.get("tls_failure"):
        health["tls_failure"] = report["tls_failure"]
    return health


async def set_labels(db: Database, host_id: str, owner: str, labels: dict[str, str]) -> None:
    """Replace one owner's labels ("labels": the operator's, "host_labels": the host's),
    or raise NotFound."""
    column = {"labels": hosts.c.labels, "host_labels": hosts.c.host_labels}[owner]
    async with db.unframed() as conn:  # one statement: atomic by itself
        res = await conn.execute(
            update(hosts)
            .where(hosts.c.id == host_id)
            .values({column: labels})
            .returning(hosts.c.id)
        )
        if res.first() is None:
            raise NotFound(f"store: no host {host_id!r}; check the name (it may have been removed)")


async def mark_disconnected(
    db: Database, host_id: str, now: float, replica: str | None = None
) -> bool:
    """Record that a host's agent left replica and start its active commands' reconnect
    window; return False (and change nothing) if another replica holds it.

    An agent that moved to another replica is still online: the replica it left must not
    say otherwise (or start its commands' reconnect window). Both writes are one
    transaction: a replica killed between them left the host offline and owned by nobody
    with a running command outside any window, which no sweep would ever end.
    """
    held = or_(hosts.c.replica.is_(None), hosts.c.replica == replica)
    async with db.engine.begin() as conn:
        res = await conn.execute(
            update(hosts)
            .where(hosts.c.id == host_id, held)
            .values(online=False, last_seen=now, replica=None)
        )
        if res.rowcount != 1:
            return False
        await open_reconnect_windows_of(conn, [host_id], now)
    return True


async def open_reconnect_windows_of(
    conn: AsyncConnection, host_ids: Sequence[str], now: float
) -> None:
    """Start the reconnect window of these hosts' active commands, in conn's transaction.

    A window already open keeps its start: an agent that drops again before its hello
    re-attached anything does not earn its commands a longer one.
    """
    for i in range(0, len(host_ids), _CHUNK):
        await conn.execute(
            update(commands)
            .where(
                commands.c.host_id.in_(host_ids[i : i + _CHUNK]),
                commands.c.state.in_(_ACTIVE),
                commands.c.disconnected_at.is_(None),
            )
            .values(disconnected_at=now)
        )


async def save_last_test(
    db: Database, host_id: str, summary: dict[str, Any]
) -> dict[str, Any] | None:
    """Store the summary of a host's latest test run; return the host's public row as
    written (None when it is gone)."""
    return await _update_one(db, host_id, {"last_test": summary})


async def save_outcome(
    db: Database, host_id: str, **fields: dict[str, Any]
) -> dict[str, Any] | None:
    """Store a host's last deploy outcome (last_deploy) and/or its latest plan (plan);
    return the host's public row as written (None when it is gone)."""
    values = {k: v for k, v in fields.items() if k in ("last_deploy", "plan")}
    return await _update_one(db, host_id, values)


@functools.cache
def _updating(keys: tuple[str, ...]) -> Update:
    """Return the UPDATE … RETURNING of one host (b_id) setting keys (bound as b_<key>),
    built once per shape: a finished command writes one, and building it cost as much CPU
    as running it."""
    return (
        update(hosts)
        .where(hosts.c.id == bindparam("b_id"))
        .values({k: bindparam(f"b_{k}", type_=hosts.c[k].type) for k in keys})
        .returning(*PUBLIC)
    )


async def _update_one(db: Database, host_id: str, values: dict[str, Any]) -> dict[str, Any] | None:
    # One UPDATE … RETURNING: atomic by itself, and whoever announces the host reads nothing.
    query = _updating(tuple(sorted(values)))
    async with db.unframed() as conn:
        res = await conn.execute(
            query, {"b_id": host_id, **{f"b_{k}": v for k, v in values.items()}}
        )
        row = res.first()
    return None if row is None else dict(row._mapping)


async def set_health_gate(db: Database, host_id: str, gate: dict[str, Any] | None) -> None:
    """Store a host's default health gate (None: the fleet's), or raise NotFound."""
    async with db.engine.begin() as conn:
        res = await conn.execute(
            update(hosts)
            .where(hosts.c.id == host_id)
            .values(health_gate=gate)
            .returning(hosts.c.id)
        )
        if res.first() is None:
            raise NotFound(f"store: no host {host_id!r}; check the name (it may have been removed)")


async def mark_all_offline(db: Database) -> None:
    """Mark every host offline: called at start-up, when no agent can be connected yet."""
    async with db.engine.begin() as conn:
        await conn.execute(update(hosts).where(hosts.c.online.is_(True)).values(online=False))


async def save_statuses(db: Database, reports: dict[str, tuple[dict[str, Any], float]]) -> None:
    """Store many heartbeats ({host id: (status, time)}) in one transaction.

    One commit for a group of heartbeats instead of one each: with thousands of agents the
    commit, not the UPDATE, is what a status costs.
    """
    if not reports:
        return
    stmt = (
        update(hosts)
        .where(hosts.c.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status", type_=hosts.c.status.type),
            last_seen=bindparam("b_seen"),
        )
    )
    params = [{"b_id": h, "b_status": st, "b_seen": at} for h, (st, at) in reports.items()]
    # One host's heartbeat is one statement, atomic by itself; a group is one transaction.
    async with db.unframed() if len(params) == 1 else db.engine.begin() as conn:
        await conn.execute(stmt, params)


async def get_many(db: Database, host_ids: Collection[str]) -> list[dict[str, Any]]:
    """Return the public rows of the hosts named (missing ones are left out)."""
    if not host_ids:
        return []
    async with db.reader.connect() as conn:
        rows = await conn.execute(select(*PUBLIC).where(hosts.c.id.in_(list(host_ids))))
    return [dict(r._mapping) for r in rows]


# The public columns with the status left out (a NULL in its place keeps the columns'
# order), built once: the ids are an expanding IN.
_REPORTED = select(*(null().label("status") if c.name == "status" else c for c in PUBLIC)).where(
    hosts.c.id.in_(bindparam("ids", expanding=True))
)


async def get_many_reported(
    db: Database, statuses: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return the public rows of the hosts in statuses (missing ones are left out), each with
    the status given there: one just stored, so not read back. Decoding each status's JSON
    again cost a heartbeat more than its UPDATE did (docs/benchmarks.md, "Sixth pass")."""
    if not statuses:
        return []
    async with db.reader.connect() as conn:
        rows = await conn.execute(_REPORTED, {"ids": list(statuses)})
    found = [dict(r._mapping) for r in rows]
    for row in found:
        row["status"] = statuses[row["id"]]
    return found
