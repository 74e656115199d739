"""Rollback to a chosen generation over real Nix profiles, on NixOS, nix-darwin and
home-manager: the host lands on that generation (the profile link says so), each switch
and rollback records its generation and commit before and after, and a generation the
host did not report is refused in words before anything is queued."""

from __future__ import annotations

import os
from typing import Any

from conftest import RunningFleet, wait_for
from nixfleet.core.errors import for_people
from nixfleet.demo.configrepo import commit_change

HOSTS = ("atlas", "borealis", "ember")  # nixos-rebuild, darwin-rebuild, home-manager


def run(api: Any, host: str, kind: str, **extra: Any) -> dict[str, Any]:
    res = api.post(f"/api/hosts/{host}/command", {"command": kind, **extra})
    assert res.status_code == 202, res.text
    cmd = api.wait_state(res.json()["command_id"], {"succeeded", "failed"}, 120)
    assert cmd["state"] == "succeeded", (host, cmd["detail"])
    return dict(cmd)


def reported(api: Any, host: str, generation: int) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (s := api.host(host)["status"] or {}).get("generation") == generation and s,
            40,
            f"{host} at generation {generation}",
        )
    )


def deploy_twice(rf: RunningFleet, api: Any) -> dict[str, list[dict[str, Any]]]:
    """Return each host's statuses after two deploys of two new commits (gens 2 and 3)."""
    seen: dict[str, list[dict[str, Any]]] = {h: [] for h in HOSTS}
    for n in (1, 2):
        # home-manager generations carry no commit: change what ember builds too.
        path = "hosts/ember/configuration.nix"
        text = (rf.fleet.root / "config/fleet-config" / path).read_text()
        text = text.replace("name = ember", f"name = ember{n} ember")
        commit_change(rf.fleet.root / "config", f"change {n}", path, text)
        cmds = {h: api.command(h, "pull-switch") for h in HOSTS}
        for host, cid in cmds.items():
            cmd = api.wait_state(cid, {"succeeded", "failed"}, 120)
            assert cmd["state"] == "succeeded", (host, cmd["detail"])
            seen[host].append(reported(api, host, n + 1))
    return seen


def test_a_rollback_lands_on_the_chosen_generation_and_records_from_and_to(make_fleet):
    rf: RunningFleet = make_fleet(hosts=5, build_seconds=0.2, failing=())
    api = rf.api()
    first = {h: reported(api, h, 1) for h in HOSTS}
    seen = deploy_twice(rf, api)
    for host in HOSTS:
        gens = {g["number"]: g for g in seen[host][-1]["generations"]}
        assert sorted(gens) == [1, 2, 3] and gens[3]["current"], host

        cmd = run(api, host, "rollback", generation=1)
        profile = rf.host(host).profile
        # The real profile points at generation 1 again; no new generation was made.
        assert os.readlink(profile) == f"{profile.name}-1-link", host
        assert sorted(p.name for p in profile.parent.glob(f"{profile.name}-*-link")) == [
            f"{profile.name}-{n}-link" for n in (1, 2, 3)
        ]
        back = reported(api, host, 1)
        assert back["current_system"] == first[host]["current_system"] == gens[1]["system"]
        assert cmd["generation"] == 1
        change = api.get(f"/api/commands/{cmd['id']}").json()["change"]
        assert change == {
            "before": {"generation": 3, "commit": seen[host][-1]["deployed_commit"]},
            "after": {"generation": 1, "commit": back["deployed_commit"]},
        }, host

    # A switch records its from → to too: from 1 (after the rollback) back to the head's
    # system, which Nix finds as generation 3 (the newest, same path: no new generation).
    again = run(api, "atlas", "switch")
    after = reported(api, "atlas", 3)
    assert after["deployed_commit"] == seen["atlas"][-1]["deployed_commit"]
    assert api.get(f"/api/commands/{again['id']}").json()["change"] == {
        "before": {"generation": 1, "commit": first["atlas"]["deployed_commit"]},
        "after": {"generation": 3, "commit": after["deployed_commit"]},
    }


def test_a_generation_the_host_did_not_report_is_refused_with_words(make_fleet):
    rf: RunningFleet = make_fleet(hosts=1, build_seconds=0.2, failing=())
    api = rf.api()
    reported(api, "atlas", 1)
    commit_change(rf.fleet.root / "config", "a second generation")
    run(api, "atlas", "pull-switch")
    reported(api, "atlas", 2)
    before = api.get("/api/hosts/atlas/commands").json()["commands"]

    cases = [
        ({"command": "rollback", "generation": 99}, 422,
         "commands: atlas has no generation 99; it reported 1–2"),
        ({"command": "rollback", "generation": 2}, 409,
         "commands: atlas already runs generation 2"),
        ({"command": "switch", "generation": 1}, 422,
         "commands: only a rollback takes a generation, not switch; leave it out"),
    ]  # fmt: skip
    for body, status, words in cases:
        res = api.post("/api/hosts/atlas/command", body)
        assert res.status_code == status, (body, res.text)
        assert res.json()["detail"] == for_people(words), body
    for bad in (0, -1, "1", 2**31, 1.5):
        res = api.post("/api/hosts/atlas/command", {"command": "rollback", "generation": bad})
        assert res.status_code == 422, (bad, res.text)
    # Nothing was queued for any refusal, and each was audited.
    assert api.get("/api/hosts/atlas/commands").json()["commands"] == before
    audit = wait_for(
        lambda: (
            (
                e := [
                    x
                    for x in api.get("/api/audit?action=command").json()["entries"]
                    if x["result"] != "accepted"
                ]
            )
            and len(e) >= 3
            and e
        ),
        10,
        "the refusals' audit entries",
    )
    assert {e["result"] for e in audit} >= {"invalid", "conflict"}
    assert os.readlink(rf.host("atlas").profile) == "system-2-link"
