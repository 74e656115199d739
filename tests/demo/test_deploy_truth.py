"""What the fleet view says is deployed, with real Nix, real agents and real git underneath."""

from __future__ import annotations

import os
import subprocess

from conftest import wait_for
from nixfleet.demo.configrepo import commit_change, update_nixpkgs
from nixfleet.demo.run import reboot

# The dashboard looks for a new target every second, not every ten: these tests move it.
FAST = {"NIXFLEET_TARGET_CACHE_S": "1"}


def _deploy(api, host_id: str) -> dict:
    return api.host(host_id)["deploy"]


def _generations(rf, host_id: str) -> list[str]:
    out = subprocess.run(
        ["nix-env", "-p", str(rf.host(host_id).profile), "--list-generations"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _switch(api, host_id: str, kind: str = "pull-switch") -> dict:
    return api.wait_state(api.command(host_id, kind), {"succeeded", "failed", "timed_out"})


def _config_edit(rf, host_id: str, old: str, new: str, message: str) -> str:
    path = f"hosts/{host_id}/configuration.nix"
    text = (rf.fleet.root / "config" / "fleet-config" / path).read_text()
    assert old in text
    return commit_change(rf.fleet.root / "config", message, path, text.replace(old, new))


def test_a_fresh_host_is_never_deployed_and_a_switch_makes_a_real_generation(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=0, env=FAST)
    api = rf.api()
    deploy = wait_for(lambda: _deploy(api, "atlas")["system"] and _deploy(api, "atlas"))
    assert deploy["state"] == "never_deployed"
    assert deploy["deployed_commit"] is None
    assert deploy["generation"] == 1
    assert api.host("atlas")["status"]["os_version"] == "25.05"
    head = api.get("/api/hosts").json()["target"]

    cmd = _switch(api, "atlas", "switch")
    assert cmd["state"] == "succeeded", cmd["detail"]
    assert _generations(rf, "atlas") == ["1", "2"]
    deploy = wait_for(lambda: _deploy(api, "atlas")["generation"] == 2 and _deploy(api, "atlas"))
    assert deploy["state"] == "current"
    assert deploy["deployed_commit"] == head
    assert deploy["system"] == os.path.realpath(rf.host("atlas").profile)
    assert deploy["last"]["result"] == "succeeded"
    assert api.host("atlas")["status"]["deployed_from"] == "system"
    # The host lists its real generations, newest first: the new one running, with its commit;
    # the first one (installed from a copy without a revision) with none.
    gens = wait_for(
        lambda: (
            len(api.host("atlas")["status"]["generations"]) == 2
            and api.host("atlas")["status"]["generations"]
        )
    )
    assert [(g["number"], g["current"], g["commit"]) for g in gens] == [
        (2, True, head),
        (1, False, ""),
    ]
    assert gens[0]["system"] == deploy["system"]


def test_a_pull_without_a_switch_leaves_the_host_behind(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=0, env=FAST)
    api = rf.api()
    assert _switch(api, "atlas")["state"] == "succeeded"
    deployed = wait_for(lambda: _deploy(api, "atlas")["deployed_commit"])
    new_head = commit_change(rf.fleet.root / "config", "motd tweak")
    wait_for(lambda: _deploy(api, "atlas")["target_commit"] == new_head, 30, "the new target")

    assert _switch(api, "atlas", "pull")["state"] == "succeeded"
    wait_for(lambda: _deploy(api, "atlas")["checked_out_commit"] == new_head, 20, "the checkout")
    deploy = wait_for(lambda: _deploy(api, "atlas")["state"] != "unknown" and _deploy(api, "atlas"))
    assert deploy["state"] == "behind"
    assert deploy["deployed_commit"] == deployed
    assert api.host("atlas")["drift"] == "behind"
    behind = api.get("/api/hosts?state=behind").json()
    assert [h["id"] for h in behind["hosts"]] == ["atlas"]
    assert behind["counts"]["behind"] == 1


def test_a_failing_build_shows_failed_and_keeps_the_previous_deployed_commit(make_fleet):
    rf = make_fleet(hosts=2, build_seconds=0, failing=(), env=FAST)
    api = rf.api()
    assert _switch(api, "atlas")["state"] == "succeeded"
    good = wait_for(lambda: _deploy(api, "atlas")["deployed_commit"])
    commit_change(
        rf.fleet.root / "config", "break atlas", "hosts/atlas/FAIL_BUILD", "disk layout is wrong"
    )
    cmd = _switch(api, "atlas")
    assert cmd["state"] == "failed"
    assert any("disk layout is wrong" in line["text"] for line in cmd["output"])

    deploy = wait_for(lambda: _deploy(api, "atlas")["state"] == "failed" and _deploy(api, "atlas"))
    assert deploy["deployed_commit"] == good
    assert deploy["last"]["command_id"] == cmd["id"]
    listing = api.get("/api/hosts?state=failed").json()
    assert [h["id"] for h in listing["hosts"]] == ["atlas"]
    assert listing["counts"]["failed"] == 1
    assert api.get("/api/hosts?state=sideways").status_code == 422

    commit_change(rf.fleet.root / "config", "fix atlas", "hosts/atlas/FAIL_BUILD", "")
    subprocess.run(
        [
            "git",
            "-C",
            str(rf.fleet.root / "config" / "fleet-config"),
            "rm",
            "-q",
            "--",
            "hosts/atlas/FAIL_BUILD",
        ],
        check=True,
    )
    fixed = commit_change(rf.fleet.root / "config", "fix atlas for real")
    assert _switch(api, "atlas")["state"] == "succeeded"
    # The view may still be the one before the agent's report of the new generation.
    wait_for(
        lambda: (
            (d := _deploy(api, "atlas"))["state"] == "current" and d["deployed_commit"] == fixed
        ),
        20,
        "current again, at the fixed commit",
    )


def test_a_kernel_change_needs_a_reboot_a_config_change_does_not_and_a_reboot_clears_it(
    make_fleet,
):
    rf = make_fleet(hosts=1, build_seconds=0, env=FAST)
    api = rf.api()
    _config_edit(rf, "atlas", '"Welcome to atlas."', '"Hello."', "motd")
    assert _switch(api, "atlas")["state"] == "succeeded"
    wait_for(lambda: _deploy(api, "atlas")["state"] == "current", 20, "current")
    assert api.host("atlas")["reboot"] == {"needed": False, "reason": ""}

    _config_edit(rf, "atlas", "pkgs.linux_6_6", "pkgs.linux_6_12", "kernel 6.12")
    assert _switch(api, "atlas")["state"] == "succeeded"
    host = wait_for(lambda: api.host("atlas")["reboot"]["needed"] and api.host("atlas"))
    assert host["reboot"]["reason"] == "kernel, initrd and kernel modules changed since boot"
    assert host["reboot_needed"] is True
    assert api.get("/api/hosts").json()["counts"]["reboot"] == 1

    reboot(rf.host("atlas"))
    wait_for(lambda: api.host("atlas")["reboot"]["needed"] is False, 20, "the reboot to count")
    assert api.host("atlas")["status"]["kernel"].startswith("6.12.")


def test_a_plan_lists_a_kernel_bump_and_an_identical_target_says_no_change(make_fleet):
    rf = make_fleet(hosts=2, build_seconds=0, env=FAST)
    api = rf.api()
    for host in ("atlas", "borealis"):
        assert _switch(api, host)["state"] == "succeeded"
    cmd = api.wait_state(api.command("atlas", "plan"), {"succeeded", "failed"})
    assert cmd["state"] == "succeeded", cmd["output"]
    plan = wait_for(lambda: api.host("atlas")["plan"])
    assert (plan["changed"], plan["summary"], plan["expired"]) == (False, "no change", False)

    update_nixpkgs(rf.fleet.root / "config")
    target = wait_for(
        lambda: (
            api.get("/api/hosts").json()["target"] != plan["target_commit"]
            and api.get("/api/hosts").json()["target"]
        ),
        30,
        "the new target",
    )
    assert api.host("atlas")["plan"]["expired"] is True
    res = api.post("/api/commands/bulk", {"command": "plan", "host_ids": ["atlas", "borealis"]})
    assert res.status_code == 202
    for result in res.json()["results"]:
        api.wait_state(result["command_id"], {"succeeded", "failed"})
    plan = wait_for(lambda: (p := api.host("atlas")["plan"]) and not p["expired"] and p)
    assert plan["target_commit"] == target
    assert plan["changed"] is True
    names = {c["name"]: (c["from"], c["to"]) for c in plan["changes"]}
    assert names == {"linux": ("6.6.30", "6.6.31"), "initrd-linux": ("6.6.30", "6.6.31")}
    assert plan["reboot"] is True
    assert plan["size_delta"] > 0
    assert plan["restart"] == []  # sshd's package did not change
    assert "linux (+ initrd-linux) 6.6.30 → 6.6.31" in plan["summary"]
    summary = api.get("/api/hosts").json()["plan_summary"]
    assert summary.startswith("2 hosts: 2 would change, 0 identical; ")
    assert "linux (+ initrd-linux) 6.6.30 → 6.6.31 on 1" in summary
    assert "reboot on 1" in summary  # borealis is a Mac: no kernel of its own
    # The switch reuses what the plan built: nothing is left to build.
    cmd = _switch(api, "atlas")
    assert not any(line["text"].startswith("building '") for line in cmd["output"])


def test_the_deployed_commit_survives_agent_and_dashboard_restarts(make_fleet):
    rf = make_fleet(hosts=5, build_seconds=0, agents=False, env=FAST)
    rf.start_agent("ember")  # home-manager: its generations carry no configuration revision
    api = rf.api()
    api.wait_online(["ember"])
    assert _switch(api, "ember")["state"] == "succeeded"
    head = api.get("/api/hosts").json()["target"]
    wait_for(lambda: _deploy(api, "ember")["state"] == "current", 20, "current")
    assert api.host("ember")["status"]["deployed_from"] == "agent"
    assert api.host("ember")["reboot"]["needed"] is None

    rf.kill_agent("ember")
    rf.kill_dashboard()
    rf.start_dashboard()
    rf.start_agent("ember")
    api = rf.api()
    api.wait_online(["ember"])
    deploy = wait_for(lambda: _deploy(api, "ember")["state"] == "current" and _deploy(api, "ember"))
    assert deploy["deployed_commit"] == head
    assert deploy["last"]["result"] == "succeeded"
    assert api.host("ember")["status"]["deployed_from"] == "agent"
    record = (rf.host("ember").root / "state" / "deployments.json").read_text()
    assert head in record
