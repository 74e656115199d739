"""Guard rails: a second deploy while one runs needs a yes; a host no agent can receive
commands on (never enrolled, token revoked) is refused with words, nothing queued."""

from __future__ import annotations

from conftest import RunningFleet


def test_a_second_switch_while_one_runs_is_refused_with_the_reason_unless_confirmed(make_fleet):
    rf: RunningFleet = make_fleet(hosts=1, build_seconds=3)
    api = rf.api()
    first = api.command("atlas", "switch")
    api.wait_state(first, {"running"}, timeout=20)
    again = api.post("/api/hosts/atlas/command", {"command": "pull-switch"})
    assert again.status_code == 409
    assert again.json()["error"] == "already_deploying"
    assert again.json()["detail"].startswith("A switch is already running on atlas")
    assert len(api.get("/api/hosts/atlas/commands").json()["commands"]) == 1
    assert api.post("/api/hosts/atlas/command", {"command": "test"}).status_code == 202
    forced = api.post("/api/hosts/atlas/command", {"command": "switch", "force": True})
    assert forced.status_code == 202 and forced.json()["state"] == "queued"
    assert api.wait_state(forced.json()["command_id"], {"succeeded", "failed"})["state"] == (
        "succeeded"
    )
    audit = api.get("/api/audit?action=command").json()["entries"]
    assert any(e["result"] == "already_deploying" for e in audit)
    assert any((e.get("detail") or {}).get("force") is True for e in audit)


def test_a_host_that_never_enrolled_or_was_revoked_gets_no_command_queued(make_fleet):
    rf: RunningFleet = make_fleet(hosts=1, agents=False)
    api = rf.api()
    assert api.post("/api/hosts", {"host_id": "web-01"}).status_code in (200, 201)
    res = api.post("/api/hosts/web-01/command", {"command": "switch"})
    assert res.status_code == 409 and res.json()["error"] == "not_enrolled"
    assert "never enrolled" in res.json()["detail"] and "enrollment code" in res.json()["detail"]
    bulk = api.post("/api/commands/bulk", {"command": "pull", "host_ids": ["web-01", "atlas"]})
    by_host = {r["host_id"]: r for r in bulk.json()["results"]}
    assert by_host["web-01"]["error"] == "not_enrolled" and by_host["atlas"]["state"] == "queued"
    plan = api.post(
        "/api/rollouts", {"command": "switch", "host_ids": ["web-01", "atlas"], "dry_run": True}
    ).json()
    assert plan["waves"] == [["atlas"]]
    assert plan["refused"][0]["host_id"] == "web-01"
    assert "never enrolled" in plan["refused"][0]["detail"]
    assert api.get("/api/hosts/web-01/commands").json()["commands"] == []

    assert api.http.delete(
        "/api/hosts/atlas/agent-token", headers={"X-CSRF-Token": api.csrf}
    ).status_code in (200, 204)
    res = api.post("/api/hosts/atlas/command", {"command": "test"})
    assert res.status_code == 409 and "revoked" in res.json()["detail"]
