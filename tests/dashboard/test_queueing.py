"""Commands for offline hosts wait, expire, are superseded or cancelled."""

from __future__ import annotations

import itertools
import time

import pytest

# Queueing, expiry and supersession are stored state: both engines.
pytestmark = pytest.mark.usefixtures("backend")


def test_a_command_queued_for_an_offline_host_is_delivered_when_it_connects(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    cid = api.command("atlas", "switch")
    time.sleep(0.5)
    assert api.get(f"/api/commands/{cid}").json()["state"] == "queued"
    rf.start_agent("atlas")
    assert api.wait_state(cid, {"succeeded", "failed"})["state"] == "succeeded"


def test_an_expired_command_is_never_delivered(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_COMMAND_EXPIRY_S": "1"})
    api = rf.api()
    cid = api.command("atlas", "switch")
    cmd = api.wait_state(cid, {"timed_out"}, timeout=15)
    assert "expired" in cmd["detail"]
    rf.start_agent("atlas")
    api.wait_online(["atlas"])
    time.sleep(1)
    cmd = api.get(f"/api/commands/{cid}").json()
    assert cmd["state"] == "timed_out"
    assert cmd["output"] == []
    assert cmd["dispatched_at"] is None


def test_a_newer_switch_supersedes_a_queued_one(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    first = api.command("atlas", "switch")
    test = api.command("atlas", "test")
    second = api.command("atlas", "pull-switch")
    old = api.get(f"/api/commands/{first}").json()
    assert old["state"] == "cancelled"
    assert second in old["detail"]
    assert api.get(f"/api/commands/{test}").json()["state"] == "queued"
    rf.start_agent("atlas")
    assert api.wait_state(test, {"succeeded", "failed"})["state"] == "succeeded"
    assert api.wait_state(second, {"succeeded", "failed"})["state"] == "succeeded"


def test_a_queued_command_can_be_cancelled_and_then_never_runs(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    cid = api.command("atlas", "switch")
    res = api.post(f"/api/commands/{cid}/cancel")
    assert res.status_code == 200
    assert res.json()["state"] == "cancelled"
    again = api.post(f"/api/commands/{cid}/cancel")
    assert again.status_code == 409
    rf.start_agent("atlas")
    api.wait_online(["atlas"])
    time.sleep(1)
    assert api.get(f"/api/commands/{cid}").json()["state"] == "cancelled"


def test_commands_for_one_host_run_one_at_a_time_in_order(make_fleet):
    rf = make_fleet(hosts=1)
    api = rf.api()
    ids = [api.command("atlas", kind) for kind in ("pull", "test", "switch")]
    cmds = [api.wait_state(cid, {"succeeded", "failed"}) for cid in ids]
    assert all(c["state"] == "succeeded" for c in cmds)
    for earlier, later in itertools.pairwise(cmds):
        assert earlier["finished_at"] <= later["started_at"]
