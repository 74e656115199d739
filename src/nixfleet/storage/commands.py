"""Where commands are stored. Every state change is a guarded UPDATE
(`WHERE id = ? AND state IN (…)`) so two dashboard replicas never both claim one.

Every UPDATE that writes a state is built by `_transition`, which refuses a move the state
machine in `core.commands` forbids, and new rows must be born in an initial state: an
illegal transition cannot be written, whoever calls.

The statements of a command's life (queue, claim, started, finished, the guard-rail read)
are built once per shape (`functools.cache`), with bound parameters: building a statement with
SQLAlchemy costs about as much CPU as running it on SQLite (its cache key and coercions
walk the whole statement), and these run several times per command.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    RowMapping,
    Select,
    Update,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)

from nixfleet.core.commands import (
    ACTIVE_STATES,
    INITIAL_STATES,
    SUPERSEDING,
    CommandState,
    can_move,
)
from nixfleet.core.errors import NotFound
from nixfleet.storage.asyncengine import AsyncConnection
from nixfleet.storage.db import Database
from nixfleet.storage.hosts import ONE as ONE_HOST
from nixfleet.storage.tables import commands, hosts


def _transition(from_states: Collection[CommandState], to_state: CommandState) -> Update:
    """Return the UPDATE moving commands in from_states to to_state (callers add scope).

    A transition the state machine (core) forbids is a programming error, not a miss.
    """
    illegal = sorted(s.value for s in from_states if not can_move(s, to_state))
    if illegal or not from_states:
        raise ValueError(f"store: illegal transition {illegal} -> {to_state.value}")
    return update(commands).where(_state_in(from_states)).values(state=to_state)


def _state_in(states: Collection[CommandState]) -> ColumnElement[bool]:
    """Return `state = a OR state = b …`: the same rows as `state IN (…)`, without the
    expanding parameter SQLAlchemy re-renders into the SQL text at every execution."""
    return or_(*(commands.c.state == s.value for s in sorted(states)))


def _of_one(query: Update, keys: tuple[str, ...]) -> Update:
    """Return query narrowed to one command of one host (b_id, b_host), setting the columns
    named by keys (bound as b_<key>) and returning the row as written."""
    return (
        query.where(commands.c.id == bindparam("b_id"), commands.c.host_id == bindparam("b_host"))
        .values({k: bindparam(f"b_{k}", type_=commands.c[k].type) for k in keys})
        .returning(*commands.c)
    )


@functools.cache  # one statement per (hashable) shape
def _moving(
    from_states: frozenset[CommandState], to_state: CommandState, keys: tuple[str, ...]
) -> Update:
    return _of_one(_transition(from_states, to_state), keys)


@functools.cache  # one statement per (hashable) shape
def _setting(only_in: frozenset[CommandState] | None, keys: tuple[str, ...]) -> Update:
    query = update(commands) if only_in is None else update(commands).where(_state_in(only_in))
    return _of_one(query, keys)


def _bound(command_id: str, host_id: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"b_id": command_id, "b_host": host_id, **{f"b_{k}": v for k, v in values.items()}}


_INSERT: Insert = insert(commands).returning(*commands.c)
_SUPERSEDE: Update = (
    _transition({CommandState.QUEUED}, CommandState.CANCELLED)
    .where(
        commands.c.host_id == bindparam("b_host"),
        or_(*(commands.c.kind == k.value for k in sorted(SUPERSEDING))),
    )
    .values(finished_at=bindparam("b_at"), detail=bindparam("b_why"))
    .returning(*commands.c)
)
_ONE: Select[Any] = select(commands).where(commands.c.id == bindparam("b_id"))
_DELIVERABLE: Select[Any] = (
    select(commands)
    .where(
        commands.c.host_id.in_(bindparam("b_hosts", expanding=True)),
        commands.c.state == CommandState.QUEUED.value,
        or_(commands.c.expires_at.is_(None), commands.c.expires_at > bindparam("b_now")),
    )
    .order_by(commands.c.created_at)
)
_BUSY: Select[Any] = (
    select(commands.c.host_id)
    .distinct()
    .where(commands.c.host_id.in_(bindparam("b_hosts", expanding=True)), _state_in(ACTIVE_STATES))
)
_CLAIM: Update = (
    _transition({CommandState.QUEUED}, CommandState.DISPATCHED)
    .where(commands.c.id.in_(bindparam("b_ids", expanding=True)))
    .values(dispatched_at=bindparam("b_now"))
    .returning(*commands.c)
)
# A replica with a holder id claims only commands of hosts whose connection it holds.
_CLAIM_HELD: Update = _CLAIM.where(
    commands.c.host_id.in_(select(hosts.c.id).where(hosts.c.replica == bindparam("b_holder")))
)


@functools.cache  # one statement per (hashable) shape
def _active_of_host(limit: int) -> Select[Any]:
    return (
        select(commands)
        .where(commands.c.host_id == bindparam("b_host"), _state_in(ACTIVE_STATES))
        .order_by(commands.c.created_at.desc())
        .limit(limit)
    )


def _born(rows: Iterable[dict[str, Any]]) -> None:
    """Refuse a new command row whose state is not an initial one."""
    for row in rows:
        if CommandState(row.get("state", CommandState.QUEUED)) not in INITIAL_STATES:
            raise ValueError(f"store: a command cannot be born {row['state']}")


def _no_state(values: dict[str, Any]) -> None:
    if "state" in values:
        raise ValueError("store: a state is written only by a transition")


def _clean(row: RowMapping) -> dict[str, Any]:
    """Return a row as a dict; a non-finite time stored before agent input was bounded
    reads as unknown, so no reader (JSON without NaN) fails on it."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


async def enqueue(db: Database, row: dict[str, Any], supersede: bool) -> list[str]:
    """Insert a queued command; return ids of queued commands it superseded (now cancelled)."""
    _, cancelled = await queue(db, row, supersede)
    return [c["id"] for c in cancelled]


async def queue(
    db: Database, row: dict[str, Any], supersede: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Insert a command; return it as stored and the queued commands it superseded.

    1. When `supersede`, cancel this host's queued switch-like commands in the same
       transaction, so no reader sees two queued switches.
    2. Insert the new row. Both statements return their rows (RETURNING), so whoever
       announces them reads nothing again.
    """
    _born([row])
    cancelled: list[dict[str, Any]] = []
    # Without superseding, the INSERT is the only statement: atomic by itself.
    async with db.engine.begin() if supersede else db.unframed() as conn:
        if supersede:
            why = f"superseded by {row['id']}"
            res = await conn.execute(
                _SUPERSEDE, {"b_host": row["host_id"], "b_at": row["created_at"], "b_why": why}
            )
            cancelled = [_clean(r._mapping) for r in res]
        stored = (await conn.execute(_INSERT, row)).one()
    return _clean(stored._mapping), cancelled


async def move(
    db: Database,
    command_id: str,
    host_id: str,
    from_states: Collection[CommandState],
    to_state: CommandState,
    **values: Any,
) -> bool:
    """Move a command of host_id to to_state if it is in one of from_states; return success."""
    return await moved(db, command_id, host_id, from_states, to_state, **values) is not None


async def moved(
    db: Database,
    command_id: str,
    host_id: str,
    from_states: Collection[CommandState],
    to_state: CommandState,
    **values: Any,
) -> dict[str, Any] | None:
    """Move a command as `move` does; return its row as written, or None if it was not
    in one of from_states.

    One guarded UPDATE … RETURNING, atomic by itself (`Database.unframed`).
    """
    _no_state(values)
    query = _moving(frozenset(from_states), to_state, tuple(sorted(values)))
    async with db.unframed() as conn:
        row = (await conn.execute(query, _bound(command_id, host_id, values))).first()
    return None if row is None else _clean(row._mapping)


async def set_fields(
    db: Database,
    command_id: str,
    host_id: str,
    only_in: Collection[CommandState] | None = None,
    **values: Any,
) -> dict[str, Any] | None:
    """Update non-state fields of one command of host_id (only while in only_in, if given);
    return its row as written, or None when no row changed."""
    _no_state(values)
    shape = None if only_in is None else frozenset(only_in)
    query = _setting(shape, tuple(sorted(values)))
    async with db.unframed() as conn:
        row = (await conn.execute(query, _bound(command_id, host_id, values))).first()
    return None if row is None else _clean(row._mapping)


async def host_and_active(
    db: Database, host_id: str, limit: int = 5
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return the host's public row and its active commands, newest first (what a new
    command is checked against), read on one connection; raise NotFound for no host."""
    async with db.reader.connect() as conn:
        host = (await conn.execute(ONE_HOST, {"host_id": host_id})).first()
        if host is None:
            raise NotFound(f"store: no host {host_id!r}; check the name (it may have been removed)")
        active = await conn.execute(_active_of_host(limit), {"b_host": host_id})
        rows = [_clean(r._mapping) for r in active]
    return dict(host._mapping), rows


async def get(db: Database, command_id: str) -> dict[str, Any]:
    """Return one command row or raise NotFound."""
    async with db.reader.connect() as conn:
        row = (await conn.execute(_ONE, {"b_id": command_id})).first()
    if row is None:
        raise NotFound(f"store: no command {command_id!r}")
    return _clean(row._mapping)


async def for_host(
    db: Database, host_id: str, states: Iterable[CommandState] | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Return a host's commands, newest first, optionally only those in states."""
    query = select(commands).where(commands.c.host_id == host_id)
    if states is not None:
        query = query.where(commands.c.state.in_([s.value for s in states]))
    query = query.order_by(commands.c.created_at.desc()).limit(limit)
    async with db.reader.connect() as conn:
        return [_clean(r._mapping) for r in await conn.execute(query)]


async def recent(db: Database, limit: int) -> list[dict[str, Any]]:
    """Return the fleet's newest commands (for the dashboard's first paint)."""
    query = select(commands).order_by(commands.c.created_at.desc()).limit(limit)
    async with db.reader.connect() as conn:
        return [_clean(r._mapping) for r in await conn.execute(query)]


async def expire_queued(db: Database, now: float) -> list[dict[str, Any]]:
    """Mark queued commands past their expiry timed_out; return the rows changed."""
    async with db.engine.begin() as conn:
        res = await conn.execute(
            _transition({CommandState.QUEUED}, CommandState.TIMED_OUT)
            .where(commands.c.expires_at.is_not(None), commands.c.expires_at <= now)
            .values(
                finished_at=now,
                detail="expired before the host connected",
            )
            .returning(commands.c.id, commands.c.host_id)
        )
        return [_clean(r._mapping) for r in res]


async def lose_abandoned(db: Database, cutoff: float, now: float) -> list[dict[str, Any]]:
    """Mark active commands whose host left before cutoff and never came back as lost.

    A command with a health gate gets its gate's deadline on top: its agent is meant to be
    away while a new generation that broke the network waits out the gate and its runner
    rolls back, and the true result (`rolled_back`) comes when the agent is back.
    """
    away = and_(commands.c.disconnected_at.is_not(None), commands.c.disconnected_at < cutoff)
    active = commands.c.state.in_([s.value for s in ACTIVE_STATES])
    async with db.engine.begin() as conn:
        rows = await conn.execute(
            select(commands.c.id, commands.c.disconnected_at, commands.c.gate).where(away, active)
        )
        plain, gated = [], []
        for cid, left, gate in rows:
            deadline = _gate_deadline(gate)
            if not deadline:
                plain.append(cid)
            elif left + deadline < cutoff:
                gated.append(cid)
        lost: list[dict[str, Any]] = []
        for ids, detail in (
            (plain, "the agent did not reconnect within the reconnect window"),
            (gated, "the agent did not reconnect within its health gate and the reconnect window"),
        ):
            for part in _chunks(ids):
                res = await conn.execute(
                    _transition(ACTIVE_STATES, CommandState.LOST)
                    .where(commands.c.id.in_(part), away)
                    .values(finished_at=now, detail=detail)
                    .returning(commands.c.id, commands.c.host_id)
                )
                lost += [_clean(r._mapping) for r in res]
        return lost


def _gate_deadline(gate: Any) -> float:
    """Return a stored gate's deadline in seconds (0 without a gate or a readable one)."""
    if not isinstance(gate, dict):
        return 0.0
    deadline = gate.get("deadline_s")
    if not isinstance(deadline, (int, float)) or isinstance(deadline, bool):
        return 0.0
    return float(deadline) if math.isfinite(deadline) and deadline > 0 else 0.0


async def open_reconnect_windows(db: Database, now: float) -> int:
    """Start the reconnect window of every active command; return how many.

    At start-up no agent is connected yet: a command whose host went down together with
    the dashboard (a power cut) must still end as lost if the host never comes back. The
    window restarts now for all of them, since nobody could reconnect while we were down.
    """
    async with db.engine.begin() as conn:
        res = await conn.execute(
            update(commands)
            .where(commands.c.state.in_([s.value for s in ACTIVE_STATES]))
            .values(disconnected_at=now)
        )
    return int(res.rowcount or 0)


# SQLite allows 32,766 bound parameters per statement; stay far below it.
_CHUNK = 500


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


async def enqueue_many(db: Database, rows: Sequence[dict[str, Any]], supersede: bool) -> list[str]:
    """Insert queued commands for many hosts in one transaction; return superseded ids.

    The same two steps as `enqueue`, for every host at once: a bulk switch to thousands of
    hosts is one commit, not thousands.
    """
    _born(rows)
    cancelled: list[str] = []
    if not rows:
        return cancelled
    async with db.engine.begin() as conn:
        if supersede:
            for part in _chunks([r["host_id"] for r in rows]):
                res = await conn.execute(
                    _transition({CommandState.QUEUED}, CommandState.CANCELLED)
                    .where(
                        commands.c.host_id.in_(part),
                        commands.c.kind.in_([k.value for k in SUPERSEDING]),
                    )
                    .values(
                        finished_at=rows[0]["created_at"],
                        detail="superseded by a newer bulk command",
                    )
                    .returning(commands.c.id)
                )
                cancelled += [r[0] for r in res]
        await conn.execute(insert(commands), list(rows))
    return cancelled


async def get_many(db: Database, command_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Return the command rows named (missing ones are left out)."""
    out: list[dict[str, Any]] = []
    async with db.reader.connect() as conn:
        for part in _chunks(command_ids):
            res = await conn.execute(select(commands).where(commands.c.id.in_(part)))
            out += [_clean(r._mapping) for r in res]
    return out


async def deliverable_many(
    db: Database, host_ids: Sequence[str], now: float
) -> list[dict[str, Any]]:
    """Return the queued, unexpired commands of these hosts, oldest first."""
    async with db.reader.connect() as conn:
        return await _deliverable(conn, host_ids, now)


async def _deliverable(
    conn: AsyncConnection, host_ids: Sequence[str], now: float
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in _chunks(host_ids):
        rows = await conn.execute(_DELIVERABLE, {"b_hosts": list(part), "b_now": now})
        out += [_clean(r._mapping) for r in rows]
    out.sort(key=lambda c: c["created_at"])
    return out


async def busy_hosts(db: Database, host_ids: Sequence[str]) -> set[str]:
    """Return which of these hosts have an active (dispatched or running) command."""
    async with db.reader.connect() as conn:
        return await _busy(conn, host_ids)


async def _busy(conn: AsyncConnection, host_ids: Sequence[str]) -> set[str]:
    busy: set[str] = set()
    for part in _chunks(host_ids):
        res = await conn.execute(_BUSY, {"b_hosts": list(part)})
        busy |= {r[0] for r in res}
    return busy


async def claim(
    db: Database, command_ids: Sequence[str], now: float, holder: str | None = None
) -> list[dict[str, Any]]:
    """Mark queued commands dispatched; return the rows this call moved.

    The UPDATE is guarded by `state = 'queued'`, so a command another replica claimed first
    is not returned here. With a holder, only commands of hosts whose connection that
    replica holds are claimed: a replica left with a stale link to an agent that moved on
    cannot take its commands.
    """
    async with db.engine.begin() as conn:
        return await _claim(conn, command_ids, now, holder)


async def _claim(
    conn: AsyncConnection, command_ids: Sequence[str], now: float, holder: str | None
) -> list[dict[str, Any]]:
    claimed: list[dict[str, Any]] = []
    query, held = (_CLAIM, {}) if holder is None else (_CLAIM_HELD, {"b_holder": holder})
    for part in _chunks(command_ids):
        res = await conn.execute(query, {"b_ids": list(part), "b_now": now, **held})
        claimed += [_clean(r._mapping) for r in res]
    return claimed


Chooser = Callable[[list[dict[str, Any]], set[str]], list[str]]


async def claim_next(
    db: Database, host_ids: Sequence[str], now: float, choose: Chooser, holder: str | None
) -> list[dict[str, Any]]:
    """Claim what `choose` picks among these hosts' deliverable commands; return the rows
    this call moved (as `claim`).

    1. Read the hosts' queued, unexpired commands (oldest first); with some, read which
       hosts have one active.
       `choose(queued, busy)` returns the ids to send.
    2. Claim them with the guarded UPDATE. The reads and the UPDATE share one
       connection; the guard, not a transaction, keeps a claim exactly-once, so up to
       500 hosts (one UPDATE) the statements run unframed. More take several UPDATEs,
       in one transaction: all are claimed or none.
    """
    small = len(host_ids) <= _CHUNK
    async with db.unframed() if small else db.engine.begin() as conn:
        queued = await _deliverable(conn, host_ids, now)
        if not queued:
            return []
        picked = choose(queued, await _busy(conn, host_ids))
        return await _claim(conn, picked, now, holder) if picked else []
