"""Commands travel from the HTTP API to real agents and back, with their output."""

from __future__ import annotations

import time

import pytest

from conftest import wait_for
from nixfleet.demo.configrepo import commit_change


def _texts(cmd: dict) -> list[str]:
    return [line["text"] for line in cmd["output"]]


def _assert_complete(cmd: dict) -> None:
    seqs = [line["seq"] for line in cmd["output"]]
    assert seqs == list(range(1, len(seqs) + 1)), "output has a gap, a duplicate or disorder"


# Command lifecycle and survival matter for storage: both engines.
pytestmark = pytest.mark.usefixtures("backend")


def test_a_switch_on_three_hosts_succeeds_with_every_line_stored_in_order(make_fleet):
    rf = make_fleet(hosts=3)
    api = rf.api()
    ids = {h: api.command(h, "switch") for h in ("atlas", "borealis", "cirrus")}
    for host, cid in ids.items():
        cmd = api.wait_state(cid, {"succeeded", "failed", "lost"})
        assert cmd["state"] == "succeeded", (host, cmd["detail"])
        assert cmd["exit_code"] == 0
        _assert_complete(cmd)
        texts = _texts(cmd)
        assert texts[0].startswith("$ ")
        assert f"#{host}" in texts[0]
        assert len(texts) >= 5  # the command, nix building, the activation
    nixos = _texts(api.get(f"/api/commands/{ids['atlas']}").json())
    assert "activating the configuration..." in nixos
    assert nixos.index("building the system configuration...") < nixos.index(
        "activating the configuration..."
    )
    wait_for(lambda: api.host("atlas")["status"]["generation"] == 2, 20, "generation 2")


def test_a_failing_build_ends_failed_with_its_exit_code(make_fleet):
    rf = make_fleet(hosts=4)  # the fourth demo host, dune, has a broken build
    api = rf.api()
    cmd = api.wait_state(api.command("dune", "switch"), {"succeeded", "failed"})
    assert cmd["state"] == "failed"
    assert cmd["exit_code"] == 1
    assert any("error: builder for" in t for t in _texts(cmd))
    _assert_complete(cmd)


def test_the_exit_code_of_a_failing_switch_is_reported_as_is(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=0)
    path = "hosts/atlas/configuration.nix"
    text = (rf.fleet.root / "config" / "fleet-config" / path).read_text()
    text = text.replace('args = "-D";', 'args = "-D"; failsToStart = true;')
    commit_change(rf.fleet.root / "config", "sshd cannot start", path, text)
    api = rf.api()
    cmd = api.wait_state(api.command("atlas", "pull-switch"), {"succeeded", "failed"})
    # switch-to-configuration's own code for "some units failed", passed on untouched.
    assert (cmd["state"], cmd["exit_code"]) == ("failed", 4)


def test_stop_cancels_a_long_command_and_leaves_no_child_process(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=60)
    api = rf.api()
    agent_pid = rf.agents["atlas"].pid
    cid = api.command("atlas", "switch")
    api.wait_state(cid, {"running"})
    wait_for(lambda: len(rf.marked_pids() - {agent_pid}) >= 3, 10, "the build and its children")
    stop = api.post("/api/hosts/atlas/command", {"command": "stop"})
    assert stop.status_code == 202
    cmd = api.wait_state(cid, {"cancelled", "failed", "succeeded"}, timeout=30)
    assert cmd["state"] == "cancelled"
    wait_for(lambda: rf.marked_pids() == {agent_pid}, 10, "every child to be gone")


def test_stop_with_nothing_running_is_refused(make_fleet):
    rf = make_fleet(hosts=1)
    res = rf.api().post("/api/hosts/atlas/command", {"command": "stop"})
    assert res.status_code == 409
    assert res.json()["error"] == "conflict"


def test_host_tests_run_in_order_and_each_result_is_reported(make_fleet):
    rf = make_fleet(hosts=4)
    api = rf.api()
    good = api.wait_state(api.command("atlas", "test"), {"succeeded", "failed"})
    assert good["state"] == "succeeded"
    assert [t["name"] for t in good["tests"]] == ["T01-ssh.sh", "T02-disk.sh", "T03-services.sh"]
    assert all(t["ok"] for t in good["tests"])
    bad = api.wait_state(api.command("dune", "test"), {"succeeded", "failed"})
    assert bad["state"] == "failed"
    assert [t["ok"] for t in bad["tests"]] == [True, True, False]
    assert any(t.startswith("FAIL T03-services.sh") for t in _texts(bad))
    wait_for(
        lambda: (
            api.host("dune")["last_test"]
            == {"command_id": bad["id"], "at": bad["finished_at"], "passed": 2, "total": 3}
        ),
        10,
        "the host row to show 2/3",
    )


def test_pull_brings_a_host_from_behind_to_the_target_commit(make_fleet):
    # The target is looked up again after 1 s, not the default 10: the new commit shows soon.
    rf = make_fleet(hosts=1, env={"NIXFLEET_TARGET_CACHE_S": "1"})
    api = rf.api()
    new_head = commit_change(rf.fleet.root / "config", "bump nixpkgs")
    wait_for(lambda: api.host("atlas")["deploy"]["target_commit"] == new_head, 30, "new target")
    # An untracked file in the agent's clone must not survive a pull.
    stray = rf.host("atlas").root / "repo" / "stray.nix"
    stray.write_text("{}")
    cmd = api.wait_state(api.command("atlas", "pull"), {"succeeded", "failed"})
    assert cmd["state"] == "succeeded", cmd["output"]
    assert not stray.exists()
    wait_for(lambda: api.host("atlas")["status"]["commit"] == new_head, 20, "the new commit")
    # Checked out, not deployed: the host has still never switched.
    assert api.host("atlas")["deploy"]["checked_out_commit"] == new_head
    assert api.host("atlas")["deploy"]["state"] == "never_deployed"


def test_pull_switch_pulls_then_switches(make_fleet):
    rf = make_fleet(hosts=1)
    api = rf.api()
    commit_change(rf.fleet.root / "config", "new config")
    cmd = api.wait_state(api.command("atlas", "pull-switch"), {"succeeded", "failed"})
    assert cmd["state"] == "succeeded"
    texts = _texts(cmd)
    fetch = next(i for i, t in enumerate(texts) if "fetch" in t and t.startswith("$"))
    switch = next(i for i, t in enumerate(texts) if "nixos-rebuild switch" in t)
    assert fetch < switch


def test_bulk_switch_gives_each_host_its_own_command_and_one_bad_host_fails_alone(make_fleet):
    rf = make_fleet(hosts=3)
    api = rf.api()
    res = api.post(
        "/api/commands/bulk",
        {"command": "switch", "host_ids": ["atlas", "nope", "cirrus", "Bad_Id"]},
    )
    assert res.status_code == 202
    results = {r["host_id"]: r for r in res.json()["results"]}
    assert results["nope"]["error"] == "not_found"
    assert results["Bad_Id"]["error"] == "invalid_host_id"
    for host in ("atlas", "cirrus"):
        assert api.wait_state(results[host]["command_id"], {"succeeded"})["state"] == "succeeded"


def test_heartbeats_keep_coming_while_a_command_runs(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=15, env={"NIXFLEET_HEARTBEAT_S": "0.5"})
    api = rf.api()
    cid = api.command("atlas", "switch")
    api.wait_state(cid, {"running"})
    first = api.host("atlas")["last_seen"]
    time.sleep(1.5)
    assert api.get(f"/api/commands/{cid}").json()["state"] == "running"
    assert api.host("atlas")["last_seen"] > first


def test_a_command_over_its_time_limit_warns_then_times_out_leaving_no_process(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=60, agents=False)
    rf.start_agent("atlas", args=["--timeout", "switch=1:3"])
    api = rf.api()
    api.wait_online(["atlas"])
    agent_pid = rf.agents["atlas"].pid
    cid = api.command("atlas", "switch")
    warned = wait_for(lambda: api.get(f"/api/commands/{cid}").json()["warned"], 10, "a warning")
    assert warned is True
    cmd = api.get(f"/api/commands/{cid}").json()
    assert cmd["state"] == "running"
    assert "still running" in cmd["detail"]
    cmd = api.wait_state(cid, {"timed_out", "failed", "succeeded"}, timeout=20)
    assert (cmd["state"], cmd["exit_code"]) == ("timed_out", 124)
    assert any("hard time limit" in t for t in _texts(cmd))
    wait_for(lambda: rf.marked_pids() == {agent_pid}, 10, "every child to be gone")


def test_host_metadata_comes_from_the_hosts_own_configuration(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    rf.start_agent(
        "atlas", args=["--location", "DC 9", "--device-type", "router", "--theme-color", "#112233"]
    )
    api = rf.api()
    api.wait_online(["atlas"])
    host = api.host("atlas")
    assert (host["location"], host["device_type"], host["theme_color"]) == (
        "DC 9",
        "router",
        "#112233",
    )


def test_a_new_host_test_from_the_repo_runs_and_knows_its_host_and_command(make_fleet):
    rf = make_fleet(hosts=1)
    api = rf.api()
    commit_change(
        rf.fleet.root / "config",
        "add a test",
        "hosts/atlas/tests/T04-env.sh",
        '#!/usr/bin/env bash\necho "host=$NIXFLEET_HOST_ID command=$NIXFLEET_COMMAND_ID"\n',
    )
    assert api.wait_state(api.command("atlas", "pull"), {"succeeded", "failed"})["state"] == (
        "succeeded"
    )
    cid = api.command("atlas", "test")
    cmd = api.wait_state(cid, {"succeeded", "failed"})
    assert cmd["state"] == "succeeded"
    assert [t["name"] for t in cmd["tests"]][-1] == "T04-env.sh"
    assert f"host=atlas command={cid}" in _texts(cmd)
