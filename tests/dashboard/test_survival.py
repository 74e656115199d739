"""Nothing is lost when the dashboard or the agent dies in the middle of a command."""

from __future__ import annotations

import os
import signal

import pytest

from conftest import wait_for


def _seqs(cmd: dict) -> list[int]:
    return [line["seq"] for line in cmd["output"]]


# Command lifecycle and survival matter for storage: both engines.
pytestmark = pytest.mark.usefixtures("backend")


def test_a_dashboard_killed_mid_switch_ends_with_the_true_result_and_all_output(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=6)
    api = rf.api()
    cid = api.command("atlas", "switch")
    wait_for(
        lambda: len(api.get(f"/api/commands/{cid}").json()["output"]) >= 3,
        20,
        "some output before the crash",
    )
    rf.kill_dashboard()
    rf.start_dashboard()  # same port, same database
    api = rf.api()
    cmd = api.wait_state(cid, {"succeeded", "failed", "lost", "cancelled"}, timeout=60)
    assert cmd["state"] == "succeeded", cmd["detail"]
    seqs = _seqs(cmd)
    assert seqs == list(range(1, len(seqs) + 1))
    assert "activating the configuration..." in [line["text"] for line in cmd["output"]]


def test_an_agent_killed_mid_switch_reattaches_and_reports_the_real_outcome(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=5)
    api = rf.api()
    cid = api.command("atlas", "switch")
    wait_for(
        lambda: len(api.get(f"/api/commands/{cid}").json()["output"]) >= 2,
        20,
        "the build to be under way",
    )
    rf.kill_agent("atlas")
    wait_for(lambda: not api.host("atlas")["online"], 10, "the host to go offline")
    # While the agent is gone the command waits for it instead of failing.
    assert api.get(f"/api/commands/{cid}").json()["state"] == "running"
    rf.start_agent("atlas")
    cmd = api.wait_state(cid, {"succeeded", "failed", "lost"}, timeout=60)
    assert cmd["state"] == "succeeded", cmd["detail"]
    seqs = _seqs(cmd)
    assert seqs == list(range(1, len(seqs) + 1))
    assert cmd["output"][-1]["text"] != ""
    wait_for(lambda: api.host("atlas")["status"]["generation"] == 2, 20, "the new generation")


def test_a_failure_during_the_agents_absence_is_reported_as_failure(make_fleet):
    rf = make_fleet(hosts=4, build_seconds=2)
    api = rf.api()
    cid = api.command("dune", "switch")
    api.wait_state(cid, {"running"})
    rf.kill_agent("dune")
    # Let the build fail while nobody watches, then come back.
    wait_for(
        lambda: list((rf.host("dune").root / "state" / "journal").glob("*/exit.json")),
        30,
        "the detached build to finish",
    )
    rf.start_agent("dune")
    cmd = api.wait_state(cid, {"succeeded", "failed", "lost"}, timeout=60)
    assert (cmd["state"], cmd["exit_code"]) == ("failed", 1)


def test_an_agent_that_never_returns_leaves_its_command_lost_after_the_window(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=30, env={"NIXFLEET_RECONNECT_WINDOW_S": "1"})
    api = rf.api()
    cid = api.command("atlas", "switch")
    api.wait_state(cid, {"running"})
    rf.kill_agent("atlas")
    cmd = api.wait_state(cid, {"lost"}, timeout=20)
    assert "reconnect" in cmd["detail"]


def test_restart_reexecutes_the_agent_which_comes_back(make_fleet):
    rf = make_fleet(hosts=1)
    api = rf.api()
    before = api.host("atlas")["connected_at"]
    cmd = api.wait_state(api.command("atlas", "restart"), {"succeeded", "failed"})
    assert cmd["state"] == "succeeded"
    wait_for(
        lambda: api.host("atlas")["online"] and api.host("atlas")["connected_at"] > before,
        30,
        "the agent to reconnect",
    )
    # A working agent after the restart: it still runs commands.
    assert api.wait_state(api.command("atlas", "pull"), {"succeeded"})["state"] == "succeeded"


def test_restart_is_refused_for_an_offline_host(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    res = rf.api().post("/api/hosts/atlas/command", {"command": "restart"})
    assert res.status_code == 409
    assert "offline" in res.json()["detail"]


def test_a_runner_killed_without_a_result_ends_failed_not_hanging(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=30)
    api = rf.api()
    cid = api.command("atlas", "switch")
    api.wait_state(cid, {"running"})
    journal = rf.host("atlas").root / "state" / "journal" / cid
    runner = int(
        wait_for(
            lambda: (journal / "pid").exists() and (journal / "pid").read_text(),
            10,
            "the runner pid",
        )
    )
    build = int(
        wait_for(
            lambda: (journal / "step.pgid").exists() and (journal / "step.pgid").read_text(),
            10,
            "the build pgid",
        )
    )
    os.kill(runner, signal.SIGKILL)
    os.killpg(build, signal.SIGKILL)
    cmd = api.wait_state(cid, {"failed", "succeeded", "lost"}, timeout=30)
    assert cmd["state"] == "failed"
    assert "runner died" in cmd["detail"]
    assert cmd["exit_code"] is None


def test_an_agent_back_after_the_window_corrects_lost_with_the_true_result(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=3, env={"NIXFLEET_RECONNECT_WINDOW_S": "1"})
    api = rf.api()
    cid = api.command("atlas", "switch")
    api.wait_state(cid, {"running"})
    rf.kill_agent("atlas")
    api.wait_state(cid, {"lost"}, timeout=20)
    rf.start_agent("atlas")
    cmd = api.wait_state(cid, {"succeeded", "failed"}, timeout=30)
    assert cmd["state"] == "succeeded"
    seqs = _seqs(cmd)
    assert seqs == list(range(1, len(seqs) + 1))
