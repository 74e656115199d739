"""Rollback with real Nix profiles: a host deployed twice goes back to the generation (and
the commit) before, shown in its history."""

from __future__ import annotations

from typing import Any

from conftest import RunningFleet, wait_for
from nixfleet.demo.configrepo import commit_change


def status(api: Any, host: str) -> dict[str, Any]:
    return dict(api.host(host)["status"] or {})


def deploy(api: Any, kind: str) -> dict[str, Any]:
    """Run kind on atlas and return the first status the agent reports after it."""
    cmd = api.wait_state(api.command("atlas", kind), {"succeeded", "failed"}, 120)
    assert cmd["state"] == "succeeded", cmd["detail"]
    return dict(
        wait_for(
            lambda: (
                ((s := status(api, "atlas")).get("last_deploy") or {}).get("command_id")
                == cmd["id"]
                and s
            ),
            40,
            f"the status after {kind}",
        )
    )


def test_a_rollback_returns_the_host_to_its_previous_generation_and_commit(make_fleet):
    rf: RunningFleet = make_fleet(hosts=1, build_seconds=0.2, failing=())
    api = rf.api()
    first = deploy(api, "pull-switch")
    commit_change(rf.fleet.root / "config", "a newer config")
    second = deploy(api, "pull-switch")
    assert second["generation"] == first["generation"] + 1
    assert second["deployed_commit"] != first["deployed_commit"]

    cmd = api.wait_state(api.command("atlas", "rollback"), {"succeeded", "failed"}, 120)
    assert cmd["state"] == "succeeded", cmd["detail"]
    back = wait_for(
        lambda: (s := status(api, "atlas"))["generation"] == first["generation"] and s,
        40,
        "the status after the rollback",
    )
    assert back["generation"] == first["generation"]
    assert back["deployed_commit"] == first["deployed_commit"]
    assert back["current_system"] == first["current_system"]
    history = api.get("/api/hosts/atlas/commands").json()["commands"]
    assert [c["kind"] for c in history] == ["rollback", "pull-switch", "pull-switch"]
    out = api.get(f"/api/commands/{history[0]['id']}").json()["output"]
    assert any(f"to {first['generation']}" in ln["text"] for ln in out)
