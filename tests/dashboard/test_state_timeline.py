"""The host's state timeline over real agents, real Nix and real git: one ordinary deploy
reads as an operator expects it — the host behind once the branch moved, then current on
the new commit — and never shows what the dashboard derived from a host between two
systems (a moved checkout read as "diverged", a fresh system not yet tied to its commit
read as "unknown"). A deploy that beats the dashboard's look at the branch teaches it the
new target at once instead of reading "diverged" until the target cache runs out."""

from __future__ import annotations

from typing import Any

from conftest import RunningFleet, wait_for
from nixfleet.demo.configrepo import commit_change

# Heartbeats every 0.3 s land while the 2-second build runs and right after it activates:
# the moments a host is between two systems.
BUSY = {"NIXFLEET_HEARTBEAT_S": "0.3"}


def deploy_timeline(api: Any) -> list[str]:
    """Return the host's deploy states, oldest first, as "state commit" (7 digits)."""
    rows = api.get("/api/hosts/atlas/states?limit=100").json()["states"]
    return [
        f"{r['value']} {r['detail'][:7]}".strip() for r in reversed(rows) if r["field"] == "deploy"
    ]


def pull_switch(rf: RunningFleet, commit: str) -> None:
    """Run a pull-switch on atlas and wait until its outcome is in the timeline."""
    api = rf.api()
    cmd = api.wait_state(api.command("atlas", "pull-switch"), {"succeeded", "failed"}, 120)
    assert cmd["state"] == "succeeded", cmd["detail"]
    wait_for(
        lambda: deploy_timeline(api)[-1] == f"current {commit[:7]}", 30, "current in the timeline"
    )


def deployed_once(make_fleet: Any, target_cache_s: str) -> tuple[RunningFleet, Any, str]:
    """Return a one-host fleet whose host was deployed once, its API and that commit."""
    rf = make_fleet(
        hosts=1, build_seconds=2, failing=(), env=BUSY | {"NIXFLEET_TARGET_CACHE_S": target_cache_s}
    )
    api = rf.api()
    first = api.get("/api/hosts").json()["target"]
    pull_switch(rf, first)
    assert deploy_timeline(api) == ["never_deployed", f"current {first[:7]}"]
    return rf, api, first


def test_a_deploy_after_the_branch_moved_reads_behind_then_current(make_fleet):
    rf, api, first = deployed_once(make_fleet, "1")

    second = commit_change(rf.fleet.root / "config", "a newer motd")
    wait_for(lambda: api.host("atlas")["deploy"]["state"] == "behind", 30, "behind")
    pull_switch(rf, second)
    assert deploy_timeline(api) == [
        "never_deployed",
        f"current {first[:7]}",
        f"behind {first[:7]}",
        f"current {second[:7]}",
    ]


def test_a_deploy_before_the_dashboard_saw_the_branch_move_reads_current_to_current(make_fleet):
    # The dashboard would look at the branch again only in an hour: what it learns of the
    # new commit it learns from the deploy.
    rf, api, first = deployed_once(make_fleet, "3600")
    second = commit_change(rf.fleet.root / "config", "a newer motd")
    pull_switch(rf, second)
    assert api.host("atlas")["deploy"]["target_commit"] == second
    assert deploy_timeline(api) == [
        "never_deployed",
        f"current {first[:7]}",
        f"current {second[:7]}",
    ]


def test_a_new_host_s_history_starts_when_its_agent_first_reports(make_fleet):
    # Not "offline, unknown, no reboot needed" at the moment it was added: that says nothing.
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    assert api.get("/api/hosts/atlas/states").json()["states"] == []
    rf.start_agent("atlas")
    wait_for(lambda: api.host("atlas")["online"], 30, "atlas online")

    def history() -> list[tuple[str, str, str]]:
        rows = api.get("/api/hosts/atlas/states").json()["states"]
        return sorted((r["field"], r["value"], r["detail"]) for r in rows)

    wait_for(lambda: len(history()) == 3, 30, "three rows")
    assert history() == [
        ("connection", "online", ""),
        ("deploy", "never_deployed", ""),
        ("reboot", "not needed", ""),
    ]
