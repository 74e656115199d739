"""Where rollouts are stored: the rollout, each host's wave and command.

A wave starts in one transaction that moves the rollout's `wave` guard (`WHERE wave = w-1
AND state = 'running'`) and inserts that wave's commands: a dashboard killed in the middle
leaves either both or neither, and a second process that tries the same wave changes no
row, so no host is ever deployed twice by one rollout.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update

from nixfleet.core.commands import SUPERSEDING, CommandState
from nixfleet.core.errors import NotFound
from nixfleet.core.rollouts import RolloutState, can_move
from nixfleet.storage.db import Database
from nixfleet.storage.tables import commands, rollout_hosts, rollouts

_CHUNK = 500


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


async def create(db: Database, row: dict[str, Any], waves: Sequence[Sequence[str]]) -> None:
    """Insert a rollout and its hosts, each in its wave, in one transaction."""
    hosts = [
        {"rollout_id": row["id"], "host_id": h, "wave": i, "command_id": None}
        for i, wave in enumerate(waves)
        for h in wave
    ]
    async with db.engine.begin() as conn:
        await conn.execute(insert(rollouts).values(**row))
        for part in _chunks(hosts):
            await conn.execute(insert(rollout_hosts), list(part))


async def get(db: Database, rollout_id: str) -> dict[str, Any]:
    """Return one rollout row or raise NotFound."""
    async with db.reader.connect() as conn:
        row = (await conn.execute(select(rollouts).where(rollouts.c.id == rollout_id))).first()
    if row is None:
        raise NotFound(f"rollouts: there is no rollout {rollout_id[:40]!r}")
    return dict(row._mapping)


async def recent(db: Database, limit: int) -> list[dict[str, Any]]:
    """Return the newest rollouts, newest first."""
    query = select(rollouts).order_by(rollouts.c.created_at.desc()).limit(limit)
    async with db.reader.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


# Built once: the engine asks each time a command ends.
_OPEN = select(rollouts.c.id).where(
    or_(rollouts.c.state == RolloutState.RUNNING, rollouts.c.state == RolloutState.PAUSED)
)


async def open_ids(db: Database) -> list[str]:
    """Return the ids of rollouts that are running or paused (work for the engine)."""
    async with db.reader.connect() as conn:
        return [r[0] for r in await conn.execute(_OPEN)]


async def hosts(db: Database, rollout_id: str, wave: int | None = None) -> list[dict[str, Any]]:
    """Return the rollout's hosts (of one wave, if given) with their command's state.

    One LEFT JOIN: a host without a command yet has state None.
    """
    query = (
        select(
            rollout_hosts.c.host_id,
            rollout_hosts.c.wave,
            rollout_hosts.c.command_id,
            commands.c.state,
            commands.c.detail,
            commands.c.exit_code,
            commands.c.started_at,
            commands.c.finished_at,
        )
        .select_from(rollout_hosts.outerjoin(commands, commands.c.id == rollout_hosts.c.command_id))
        .where(rollout_hosts.c.rollout_id == rollout_id)
        .order_by(rollout_hosts.c.wave, rollout_hosts.c.host_id)
    )
    if wave is not None:
        query = query.where(rollout_hosts.c.wave == wave)
    async with db.reader.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


# Command states whose host's detail never shows in a rollout's report.
_PLAIN = (
    CommandState.QUEUED,
    CommandState.DISPATCHED,
    CommandState.RUNNING,
    CommandState.SUCCEEDED,
    CommandState.CANCELLED,
)


async def tally(
    db: Database, rollout_id: str, wave: int | None = None
) -> tuple[dict[str | None, int], list[dict[str, Any]]]:
    """Return how many of the rollout's hosts (of one wave, if given) are in each command
    state (None: no command yet), and the state, detail and exit code of every host whose
    state is none of the plain ones (the failures).

    What the rollout's counts and report need, without a row per host: the engine asks
    after every change, and a rollout may have thousands of hosts.
    """
    joined = rollout_hosts.outerjoin(commands, commands.c.id == rollout_hosts.c.command_id)
    counts = (
        select(commands.c.state, func.count())
        .select_from(joined)
        .where(rollout_hosts.c.rollout_id == rollout_id)
        .group_by(commands.c.state)
    )
    failures = (
        select(commands.c.state, commands.c.detail, commands.c.exit_code)
        .select_from(joined)
        .where(
            rollout_hosts.c.rollout_id == rollout_id,
            commands.c.state.is_not(None),
            commands.c.state.not_in([s.value for s in _PLAIN]),
        )
        .order_by(rollout_hosts.c.wave, rollout_hosts.c.host_id)
    )
    if wave is not None:
        counts = counts.where(rollout_hosts.c.wave == wave)
        failures = failures.where(rollout_hosts.c.wave == wave)
    async with db.engine.connect() as conn:
        by_state = {r[0]: int(r[1]) for r in await conn.execute(counts)}
        rows = [dict(r._mapping) for r in await conn.execute(failures)]
    return by_state, rows


async def rollout_of_commands(db: Database, command_ids: Collection[str]) -> set[str]:
    """Return the ids of the rollouts these commands belong to."""
    found: set[str] = set()
    async with db.reader.connect() as conn:
        for part in _chunks(list(command_ids)):
            res = await conn.execute(
                select(rollout_hosts.c.rollout_id)
                .distinct()
                .where(rollout_hosts.c.command_id.in_(part))
            )
            found |= {r[0] for r in res}
    return found


async def start_wave(
    db: Database, rollout_id: str, wave: int, rows: Sequence[dict[str, Any]], now: float
) -> list[str] | None:
    """Start wave `wave`: insert its commands; return ids of queued commands superseded.

    1. Move the guard from wave-1 to wave (only while running); no row changed means the
       wave was started already (another replica, or before a restart): return None.
    2. Cancel these hosts' older queued switch-like commands, as a single switch would.
    3. Insert the commands and link each to its host's place in the rollout.
    All in one transaction.
    """
    async with db.engine.begin() as conn:
        res = await conn.execute(
            update(rollouts)
            .where(
                rollouts.c.id == rollout_id,
                rollouts.c.wave == wave - 1,
                rollouts.c.state == RolloutState.RUNNING,
            )
            .values(wave=wave, next_wave_at=None, updated_at=now)
        )
        if res.rowcount != 1:
            return None
        superseded = await _supersede(conn, rows, rollout_id)
        if rows:
            await conn.execute(insert(commands), list(rows))
            await conn.execute(
                update(rollout_hosts)
                .where(
                    rollout_hosts.c.rollout_id == rollout_id,
                    rollout_hosts.c.host_id == bindparam("b_host"),
                )
                .values(command_id=bindparam("b_command")),
                [{"b_host": r["host_id"], "b_command": r["id"]} for r in rows],
            )
    return superseded


async def _supersede(conn: Any, rows: Sequence[dict[str, Any]], rollout_id: str) -> list[str]:
    kinds = {r["kind"] for r in rows}
    if not kinds & {k.value for k in SUPERSEDING}:
        return []
    cancelled: list[str] = []
    for part in _chunks([r["host_id"] for r in rows]):
        res = await conn.execute(
            update(commands)
            .where(
                commands.c.host_id.in_(part),
                commands.c.state == CommandState.QUEUED,
                commands.c.kind.in_([k.value for k in SUPERSEDING]),
            )
            .values(
                state=CommandState.CANCELLED,
                finished_at=rows[0]["created_at"],
                detail=f"superseded by rollout {rollout_id}",
            )
            .returning(commands.c.id)
        )
        cancelled += [r[0] for r in res]
    return cancelled


async def move(
    db: Database,
    rollout_id: str,
    from_states: Collection[RolloutState],
    to_state: RolloutState,
    **values: Any,
) -> bool:
    """Move a rollout to to_state if it is in one of from_states; return success."""
    if not all(can_move(src, to_state) for src in from_states):
        raise ValueError(f"rollouts: illegal transition {list(from_states)} -> {to_state}")
    async with db.engine.begin() as conn:
        res = await conn.execute(
            update(rollouts)
            .where(
                rollouts.c.id == rollout_id,
                rollouts.c.state.in_([s.value for s in from_states]),
            )
            .values(state=to_state, **values)
        )
    return bool(res.rowcount == 1)


async def set_fields(
    db: Database, rollout_id: str, only_in: Collection[RolloutState], **values: Any
) -> bool:
    """Update non-state fields of a rollout while it is in only_in; return success."""
    async with db.engine.begin() as conn:
        res = await conn.execute(
            update(rollouts)
            .where(rollouts.c.id == rollout_id, rollouts.c.state.in_([s.value for s in only_in]))
            .values(**values)
        )
    return bool(res.rowcount == 1)


async def cancel_queued(db: Database, rollout_id: str, now: float, detail: str) -> list[str]:
    """Cancel the rollout's commands that are still queued; return their ids.

    Dispatched and running ones are left to finish: stopping a switch half-way is worse
    than letting it end.
    """
    mine = select(rollout_hosts.c.command_id).where(
        rollout_hosts.c.rollout_id == rollout_id, rollout_hosts.c.command_id.is_not(None)
    )
    async with db.engine.begin() as conn:
        res = await conn.execute(
            update(commands)
            .where(commands.c.id.in_(mine), commands.c.state == CommandState.QUEUED)
            .values(state=CommandState.CANCELLED, finished_at=now, detail=detail)
            .returning(commands.c.id)
        )
        return [r[0] for r in res]
