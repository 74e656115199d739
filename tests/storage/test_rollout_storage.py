"""Rollout storage on both engines: a wave starts once, even when two replicas race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from conftest import Backend
from nixfleet.core.commands import CommandState
from nixfleet.core.rollouts import RolloutState
from nixfleet.storage import commands, hosts, rollouts
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade

NOW = 1_760_000_000.5


@pytest.fixture
async def dbs(backend: Backend) -> AsyncIterator[tuple[Database, Database]]:
    await asyncio.to_thread(upgrade, backend.url)
    one, two = Database(backend.url), Database(backend.url)
    yield one, two
    await one.close()
    await two.close()


def _cmd(cid: str, host: str) -> dict[str, object]:
    return {"id": cid, "host_id": host, "kind": "switch", "state": CommandState.QUEUED,
            "actor": "admin", "created_at": NOW, "expires_at": NOW + 3600}  # fmt: skip


async def test_two_replicas_starting_the_same_wave_deploy_each_host_once(dbs):
    one, two = dbs
    for h in ("web-01", "web-02"):
        await hosts.add(one, h, None, NOW, {})
    row = {"id": "r1", "actor": "admin", "kind": "switch", "policy": {}, "state": "running",
           "wave": -1, "waves": 2, "created_at": NOW, "updated_at": NOW}  # fmt: skip
    await rollouts.create(one, row, [["web-01"], ["web-02"]])
    old = _cmd("old", "web-01")
    await commands.enqueue(one, old, supersede=True)
    results = await asyncio.gather(
        rollouts.start_wave(one, "r1", 0, [_cmd("a", "web-01")], NOW),
        rollouts.start_wave(two, "r1", 0, [_cmd("b", "web-01")], NOW),
    )
    winners = [r for r in results if r is not None]
    assert winners == [["old"]]
    rows = await rollouts.hosts(one, "r1")
    assert [(r["host_id"], r["wave"], r["state"]) for r in rows] == [
        ("web-01", 0, "queued"), ("web-02", 1, None)
    ]  # fmt: skip
    queued = await commands.for_host(one, "web-01", [CommandState.QUEUED])
    assert len(queued) == 1 and queued[0]["id"] == rows[0]["command_id"]
    assert await rollouts.start_wave(one, "r1", 0, [_cmd("c", "web-01")], NOW) is None
    # Wave 1 cannot start before wave 0 did, nor once the rollout is paused.
    assert await rollouts.start_wave(one, "r1", 2, [], NOW) is None
    assert await rollouts.move(one, "r1", [RolloutState.RUNNING], RolloutState.PAUSED)
    assert await rollouts.start_wave(one, "r1", 1, [_cmd("d", "web-02")], NOW) is None
    assert await rollouts.cancel_queued(one, "r1", NOW, "cancelled: rollout aborted") == [
        rows[0]["command_id"]
    ]
    assert await rollouts.open_ids(one) == ["r1"]


async def test_a_tally_counts_each_state_per_wave_and_lists_only_the_failures(dbs):
    one, _ = dbs
    for h in ("web-01", "web-02", "web-03"):
        await hosts.add(one, h, None, NOW, {})
    row = {"id": "r2", "actor": "admin", "kind": "switch", "policy": {}, "state": "running",
           "wave": -1, "waves": 2, "created_at": NOW, "updated_at": NOW}  # fmt: skip
    await rollouts.create(one, row, [["web-01", "web-02"], ["web-03"]])
    await rollouts.start_wave(one, "r2", 0, [_cmd("a", "web-01"), _cmd("b", "web-02")], NOW)
    for cid, host, to in [("a", "web-01", CommandState.SUCCEEDED), ("b", "web-02", "failed")]:
        await commands.move(one, cid, host, [CommandState.QUEUED], CommandState.DISPATCHED)
        await commands.move(
            one, cid, host, [CommandState.DISPATCHED], CommandState(to), exit_code=3
        )
    by_state, failures = await rollouts.tally(one, "r2")
    assert by_state == {"succeeded": 1, "failed": 1, None: 1}
    assert failures == [{"state": "failed", "detail": "", "exit_code": 3}]
    assert await rollouts.tally(one, "r2", wave=1) == ({None: 1}, [])
