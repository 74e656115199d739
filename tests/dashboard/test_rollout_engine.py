"""The rollout engine reacts to hosts ending, not to a timer: the next wave is queued by the
last `finished` of the wave before, a failure stops the rollout by itself, and a host that
only started still moves the live counts.

The engine runs in this process on each database engine, with the dashboard's own Fleet
(the code the agent handler calls for `started` / `finished`) and its timers (the safety
net, the pace of the live counts) set to an hour: whatever happens here, happens because a
host moved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import Backend
from nixfleet.config import Settings
from nixfleet.core.protocol import Finished, Started
from nixfleet.core.rollouts import RolloutPolicy
from nixfleet.dashboard.fleet import rollouts as engine_module
from nixfleet.dashboard.fleet.rollouts import Rollouts
from nixfleet.dashboard.fleet.service import Fleet
from nixfleet.storage.bus import LocalBus
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade

HOSTS = ["web-01", "web-02", "web-03", "web-04"]
WAIT_S = 60  # a safety net for a broken engine; the timers below are an hour


class Seen:
    """Every event the bus carried, and a way to wait for one."""

    def __init__(self, bus: LocalBus) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        bus.subscribe(self._on)

    def _on(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._changed.set()

    async def until(self, check: Any, what: str) -> Any:
        async def poll() -> Any:
            while True:
                for event in self.events:
                    if found := check(event):
                        return found
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(poll(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"never saw {what}") from None


@pytest.fixture
async def fleet(backend: Backend, tmp_path, monkeypatch) -> AsyncIterator[tuple[Fleet, Rollouts]]:
    monkeypatch.setattr(engine_module, "IDLE_WAKE_S", 3600.0)
    monkeypatch.setattr(engine_module, "COUNTS_EVERY_S", 3600.0)
    await asyncio.to_thread(upgrade, backend.url)
    db = Database(backend.url)
    settings = Settings(data_dir=tmp_path, database_url=backend.url, demo=True)
    fleet = Fleet(settings, db, LocalBus())
    for host in HOSTS:
        await fleet.add_host(host, {})
        await fleet.rotate_token(host)
    engine = Rollouts(fleet)
    engine.start()
    yield fleet, engine
    await engine.shutdown()
    await db.close()


def queued_for(host: str) -> Any:
    def check(event: dict[str, Any]) -> str | None:
        cmd = event.get("command") if event["type"] == "command" else None
        if cmd and cmd["host_id"] == host and cmd["state"] == "queued":
            return str(cmd["id"])
        return None

    return check


async def run(fleet: Fleet, host: str, cid: str, result: str = "succeeded") -> None:
    """What an agent's `started` and `finished` do on the dashboard, after the hub's claim."""
    assert [c["id"] for c in await fleet.claim_many([host])] == [cid]
    await fleet.record_started(host, Started(command_id=cid, started_at=fleet.clock()))
    code = 0 if result == "succeeded" else 1
    done = Finished(command_id=cid, result=result, exit_code=code, duration_s=0.1, last_seq=0)
    await fleet.record_finished(host, done)


async def test_the_next_wave_is_queued_by_the_last_finish_of_the_wave_before(fleet):
    fleet, engine = fleet
    seen = Seen(fleet.bus)
    ro = await engine.create("admin", HOSTS, "switch", RolloutPolicy(canary=1, wave_size=2))
    assert [[h["host_id"] for h in w["hosts"]] for w in ro["waves"]] == [
        ["web-01"], ["web-02", "web-03"], ["web-04"]
    ]  # fmt: skip
    first = await seen.until(queued_for("web-01"), "the canary queued")
    await run(fleet, "web-01", first)
    second = await seen.until(queued_for("web-02"), "wave 2 queued after the canary ended")
    third = await seen.until(queued_for("web-03"), "all of wave 2 queued")
    # One host of the wave ending is not the wave ending: nothing for wave 3 yet.
    await run(fleet, "web-02", second)
    await asyncio.sleep(0.5)
    assert not any(queued_for("web-04")(e) for e in seen.events)
    await run(fleet, "web-03", third)
    last = await seen.until(queued_for("web-04"), "wave 3 queued after wave 2's last finish")
    await run(fleet, "web-04", last)
    done = await seen.until(
        lambda e: e["type"] == "rollout" and e["rollout"]["state"] == "completed" and e,
        "the rollout completed",
    )
    assert done["rollout"]["report"] == "4 succeeded"
    view = await engine.view(ro["id"])
    assert [w["state"] for w in view["waves"]] == ["passed", "passed", "passed"]


async def test_a_failure_stops_the_rollout_and_cancels_its_queue_on_the_failure_itself(fleet):
    fleet, engine = fleet
    seen = Seen(fleet.bus)
    ro = await engine.create("admin", HOSTS, "switch", RolloutPolicy(canary=2, wave_size=2))
    one = await seen.until(queued_for("web-01"), "the canary queued")
    await seen.until(queued_for("web-02"), "the second canary queued")
    await run(fleet, "web-01", one, result="failed")
    stopped = await seen.until(
        lambda e: e["type"] == "rollout" and e["rollout"]["state"] == "stopped" and e,
        "the rollout stopped by its budget",
    )
    assert stopped["rollout"]["counts"]["not_started"] == 2
    web_02 = await seen.until(
        lambda e: (
            e["type"] == "command"
            and e["command"]["host_id"] == "web-02"
            and e["command"]["state"] == "cancelled"
            and e["command"]
        ),
        "the queued canary cancelled",
    )
    assert web_02["detail"] == "cancelled: rollout stopped"
    assert (await engine.view(ro["id"]))["report"] == (
        "1 failed (exit 1), 1 cancelled, 2 not started: stopped by the failure budget"
    )


async def test_a_host_that_only_started_moves_the_live_counts_and_lists_agree(fleet, monkeypatch):
    fleet, engine = fleet
    monkeypatch.setattr(engine_module, "COUNTS_EVERY_S", 0.05)
    seen = Seen(fleet.bus)
    ro = await engine.create("admin", HOSTS, "switch", RolloutPolicy(canary=2, wave_size=2))
    one = await seen.until(queued_for("web-01"), "the canary queued")
    assert [c["id"] for c in await fleet.claim_many(["web-01"])] == [one]
    await fleet.record_started("web-01", Started(command_id=one, started_at=fleet.clock()))
    running = await seen.until(
        lambda e: e["type"] == "rollout" and e["rollout"]["counts"].get("running") == 1 and e,
        "a rollout event counting the started host",
    )
    assert running["rollout"]["counts"] == {"total": 4, "running": 1, "queued": 1, "waiting": 2}
    # The list's summary (counted in the database) says what the full view says.
    view = await engine.view(ro["id"])
    (listed,) = await engine.recent()
    assert listed["counts"] == view["counts"]
    assert listed["report"] == view["report"] == "1 still running, 1 queued, 2 waiting"
