"""A command's state changes only along the state machine in core: the store refuses any
other write, so a finished command can never be made to run again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nixfleet.core.commands import CommandState
from nixfleet.storage import commands, hosts
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade

NOW = 1_760_000_000.0


@pytest.fixture
async def db(tmp_path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'states.db'}"
    await asyncio.to_thread(upgrade, url)
    database = Database(url)
    await hosts.add(database, "web-01", None, NOW, {})
    yield database
    await database.close()


def _row(cid: str, state: CommandState = CommandState.QUEUED) -> dict[str, object]:
    return {
        "id": cid,
        "host_id": "web-01",
        "kind": "switch",
        "state": state,
        "actor": "admin",
        "created_at": NOW,
        "expires_at": NOW + 3600,
    }


async def _state(db: Database, cid: str) -> str:
    return str((await commands.get(db, cid))["state"])


async def test_a_finished_command_cannot_be_moved_back_to_running(db):
    await commands.enqueue(db, _row("c1"), supersede=False)
    assert await commands.claim(db, ["c1"], NOW)
    ok = await commands.move(db, "c1", "web-01", {CommandState.DISPATCHED}, CommandState.RUNNING)
    assert ok
    done = await commands.move(db, "c1", "web-01", {CommandState.RUNNING}, CommandState.SUCCEEDED)
    assert done
    with pytest.raises(ValueError, match="illegal transition"):
        await commands.move(db, "c1", "web-01", {CommandState.SUCCEEDED}, CommandState.RUNNING)
    assert await _state(db, "c1") == "succeeded"


async def test_a_queued_command_cannot_jump_to_running_without_being_dispatched(db):
    await commands.enqueue(db, _row("c1"), supersede=False)
    with pytest.raises(ValueError, match="illegal transition"):
        await commands.move(db, "c1", "web-01", {CommandState.QUEUED}, CommandState.RUNNING)
    assert await _state(db, "c1") == "queued"


async def test_a_state_cannot_be_written_as_a_plain_field(db):
    await commands.enqueue(db, _row("c1"), supersede=False)
    with pytest.raises(ValueError, match="only by a transition"):
        await commands.set_fields(db, "c1", "web-01", state=CommandState.RUNNING)
    with pytest.raises(ValueError, match="only by a transition"):
        await commands.move(
            db, "c1", "web-01", {CommandState.QUEUED}, CommandState.CANCELLED, state="running"
        )
    assert await _state(db, "c1") == "queued"


async def test_a_command_cannot_be_born_running(db):
    with pytest.raises(ValueError, match="born"):
        await commands.enqueue(db, _row("c1", CommandState.RUNNING), supersede=False)
    with pytest.raises(ValueError, match="born"):
        await commands.enqueue_many(db, [_row("c2"), _row("c3", CommandState.LOST)], False)
    assert await commands.for_host(db, "web-01") == []
