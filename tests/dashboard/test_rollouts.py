"""Rollouts with real agents: a failing canary stops the rest, pause/resume/abort, and a
dashboard killed mid-wave carries on without deploying any host twice."""

from __future__ import annotations

import time
from typing import Any

from conftest import Api, RunningFleet, wait_for

FINAL = {"completed", "stopped", "aborted"}


def start(api: Api, hosts: list[str], **policy: Any) -> dict[str, Any]:
    res = api.post("/api/rollouts", {"command": "switch", "host_ids": hosts, "policy": policy})
    assert res.status_code == 201, res.text
    return dict(res.json())


def wait_rollout(api: Api, rid: str, check: Any, what: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        ro = api.get(f"/api/rollouts/{rid}").json()
        return ro if check(ro) else None

    return dict(wait_for(done, timeout, what))


def outcomes(ro: dict[str, Any]) -> dict[str, str]:
    return {h["host_id"]: h["outcome"] for w in ro["waves"] for h in w["hosts"]}


def commands_of(api: Api, host: str) -> list[dict[str, Any]]:
    return list(api.get(f"/api/hosts/{host}/commands").json()["commands"])


def test_a_failing_canary_stops_a_rollout_of_ten_with_six_not_started(make_fleet):
    rf: RunningFleet = make_fleet(hosts=10, agents=False, build_seconds=0.5)
    canaries = ["atlas", "borealis", "cirrus", "dune"]  # dune, the fourth, has a broken build
    for host in canaries:
        rf.start_agent(host)
    api = rf.api()
    api.wait_online(canaries)
    hosts = [h.host_id for h in rf.fleet.hosts]
    ro = start(api, hosts, canary=4, wave_size=4, failure_budget=0)
    assert [len(w["hosts"]) for w in ro["waves"]] == [4, 4, 2]
    assert {h["host_id"] for h in ro["waves"][0]["hosts"]} == set(canaries)
    ro = wait_rollout(api, ro["id"], lambda r: r["state"] in FINAL, "the rollout to end")
    assert ro["state"] == "stopped"
    got = outcomes(ro)
    assert got["dune"] == "failed"
    assert sorted(got.values()).count("not_started") == 6
    # The budget stops it at the first failure; the other canaries still finish.
    ro = wait_rollout(api, ro["id"], lambda r: "running" not in r["report"], "the canaries to end")
    assert (
        ro["report"]
        == "3 succeeded, 1 failed (exit 1), 6 not started: stopped by the failure budget"
    )
    for host in hosts[4:]:
        assert commands_of(api, host) == []


def test_a_paused_rollout_finishes_its_wave_waits_resumes_and_an_abort_cancels_the_queue(
    make_fleet,
):
    rf: RunningFleet = make_fleet(hosts=3, agents=False, build_seconds=1)
    for host in ("atlas", "borealis"):
        rf.start_agent(host)
    api = rf.api()
    api.wait_online(["atlas", "borealis"])
    ro = start(api, ["atlas", "borealis", "cirrus"], canary=1, wave_size=2)
    rid = ro["id"]
    assert api.post(f"/api/rollouts/{rid}/pause").json()["state"] == "paused"
    wait_rollout(api, rid, lambda r: outcomes(r)["atlas"] == "succeeded", "the canary to end")
    time.sleep(1.5)  # a running rollout would have started wave 2 by now
    ro = api.get(f"/api/rollouts/{rid}").json()
    assert ro["state"] == "paused" and outcomes(ro)["borealis"] == "waiting"
    assert commands_of(api, "borealis") == []
    assert api.post(f"/api/rollouts/{rid}/pause").status_code == 409

    assert api.post(f"/api/rollouts/{rid}/resume").json()["state"] == "running"
    wait_rollout(api, rid, lambda r: outcomes(r)["borealis"] == "running", "wave 2 to run")
    ro = api.post(f"/api/rollouts/{rid}/abort").json()
    assert ro["state"] == "aborted"
    assert outcomes(ro)["cirrus"] == "cancelled"  # offline, so it was still queued
    ro = wait_rollout(
        api, rid, lambda r: outcomes(r)["borealis"] == "succeeded", "the running host to finish"
    )
    assert ro["report"] == "2 succeeded, 1 cancelled: aborted by an operator"
    assert api.post(f"/api/rollouts/{rid}/resume").status_code == 409
    rf.start_agent("cirrus")
    api.wait_online(["cirrus"])
    time.sleep(1)
    assert [c["state"] for c in commands_of(api, "cirrus")] == ["cancelled"]


def test_a_dashboard_killed_mid_wave_resumes_the_rollout_without_deploying_a_host_twice(
    make_fleet,
):
    rf: RunningFleet = make_fleet(hosts=4, build_seconds=2, failing=())
    api = rf.api()
    hosts = ["atlas", "borealis", "cirrus", "dune"]
    ro = start(api, hosts, canary=1, wave_size=3)
    wait_rollout(
        api, ro["id"], lambda r: r["wave"] == 1 and r["counts"].get("running", 0) >= 1,
        "wave 2 to be running",
    )  # fmt: skip
    rf.kill_dashboard()
    rf.start_dashboard()
    api = rf.api()
    ro = wait_rollout(api, ro["id"], lambda r: r["state"] in FINAL, "the rollout to end", 90)
    assert ro["state"] == "completed", ro["report"]
    assert ro["report"] == "4 succeeded"
    for host in hosts:
        assert [c["state"] for c in commands_of(api, host)] == ["succeeded"]


def test_bad_rollout_requests_are_refused_with_words_and_nothing_is_written(make_fleet):
    rf: RunningFleet = make_fleet(hosts=1, agents=False)
    api = rf.api()
    for body, status in [
        ({"command": "restart", "host_ids": ["atlas"]}, 422),
        ({"command": "switch", "host_ids": ["nowhere"]}, 409),
        ({"command": "switch", "host_ids": ["atlas"], "policy": {"canary": -1}}, 422),
        ({"command": "switch", "host_ids": ["atlas"], "policy": {"pause_s": "inf"}}, 422),
        ({"command": "switch", "host_ids": []}, 422),
    ]:
        res = api.post("/api/rollouts", body)
        assert res.status_code == status, (body, res.text)
        assert res.json()["detail"] and "Traceback" not in res.text
    assert api.get("/api/rollouts").json()["rollouts"] == []
    assert api.post("/api/rollouts/nope/abort").status_code == 404
    assert api.post("/api/rollouts/nope/explode").status_code == 404
    assert commands_of(api, "atlas") == []
