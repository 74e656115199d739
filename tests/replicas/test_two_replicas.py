"""Two replicas, one PostgreSQL: commands, output, sessions and agents cross between them."""

from __future__ import annotations

import httpx

from conftest import wait_for
from replicas.replicaset import LEASE_S


def _one_agent_on_each(pair, hosts: int, login_on: str):
    """Return the pair with atlas on replica a and borealis on b, online, and a logged-in
    API on the replica login_on names."""
    p = pair(hosts=hosts)
    p.start_agent("atlas", p.a.port)
    p.start_agent("borealis", p.b.port)
    api = p.login(login_on)
    api.wait_online(["atlas", "borealis"])
    return p, api


def test_a_command_queued_on_one_replica_runs_on_an_agent_of_the_other_and_streams_back(pair):
    p = pair(hosts=2, build_seconds=1)
    p.start_agent("atlas", p.b.port)
    on_b = p.login("b")
    on_b.wait_online(["atlas"])
    # Logged in on b, acting on a: the session and its CSRF token hold on every replica.
    on_a = p.acting_on(on_b, "a")
    browser_on_a = p.stream(on_a)
    cid = on_a.command("atlas", "switch")
    done = on_a.wait_state(cid, {"succeeded", "failed"})
    assert done["state"] == "succeeded"
    stored = {ln["seq"]: ln["text"] for ln in done["output"]}
    assert len(stored) > 3
    wait_for(lambda: browser_on_a.output(cid) == stored, 10, "every line on a's browser")

    def states() -> list[str]:
        return [
            f["data"]["command"]["state"]
            for f in browser_on_a.frames
            if f["event"] == "command" and f["data"]["command"]["id"] == cid
        ]

    wait_for(lambda: states()[-1] == "succeeded", 10, "the result on a's browser")
    assert states()[0] == "queued"
    assert on_a.host("atlas")["online"] and on_b.host("atlas")["online"]


def _generation(p, host_id: str) -> int:
    """Return how many generations the host's system profile has (one per switch)."""
    profile = p.rf.host(host_id).profile
    return len(list(profile.parent.glob(f"{profile.name}-*-link")))


def test_a_replica_killed_mid_build_hands_its_agents_to_the_other(pair, balancer):
    p = pair(hosts=2, build_seconds=8)
    through_lb = balancer(p.b.port, p.a.port)  # agents go to b while it answers
    for host in ("atlas", "borealis"):
        p.start_agent(host, through_lb)
    on_a = p.login("a")
    on_a.wait_online(["atlas", "borealis"])
    b_id = on_a.host("atlas")["replica"]
    assert b_id and on_a.host("borealis")["replica"] == b_id
    before = _generation(p, "atlas")
    browser_on_a = p.stream(on_a)
    build = on_a.command("atlas", "switch")
    doomed = on_a.command("borealis", "switch")
    wait_for(lambda: len(on_a.get(f"/api/commands/{build}").json()["output"]) >= 3)
    wait_for(lambda: on_a.get(f"/api/commands/{doomed}").json()["state"] == "running")

    p.rf.kill_agent("borealis")  # this host goes down with replica b
    p.b.kill()

    # b's lease runs out: a shows b's lost host offline, its build in the reconnect window.
    wait_for(lambda: not on_a.host("borealis")["online"], LEASE_S + 4, "borealis offline")
    gone = on_a.get(f"/api/commands/{doomed}").json()
    assert gone["state"] == "running" and gone["disconnected_at"] is not None
    # atlas's agent came back through the balancer to a and re-attached to its build.
    wait_for(lambda: on_a.host("atlas")["replica"] not in (None, b_id), 30, "atlas on a")
    done = on_a.wait_state(build, {"succeeded", "failed", "lost"})
    assert done["state"] == "succeeded"
    seqs = [ln["seq"] for ln in done["output"]]
    assert seqs == list(range(1, len(seqs) + 1))  # complete and gap-free
    stored = {ln["seq"]: ln["text"] for ln in done["output"]}
    wait_for(lambda: browser_on_a.output(build) == stored, 10, "every line on a's browser")
    assert _generation(p, "atlas") == before + 1  # switched once, not twice
    assert on_a.host("atlas")["online"]


def _samples(text: str, name: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(name + "{")]


def test_each_replica_labels_its_metrics_and_one_reports_the_whole_fleet(pair):
    p, on_a = _one_agent_on_each(pair, hosts=2, login_on="a")
    ids = {on_a.host("atlas")["replica"], on_a.host("borealis")["replica"]}
    assert len(ids) == 2
    labels = set()
    for text in (p.a.metrics(), p.b.metrics()):
        connected = _samples(text, "nixfleet_agents_connected")
        assert len(connected) == 1 and connected[0].endswith(" 1.0")  # its own agent
        labels.add(connected[0].split('replica="')[1].split('"')[0])
    assert labels == ids

    def fleet_reports() -> list[str]:
        texts = (p.a.metrics(), p.b.metrics())
        lines = [ln for text in texts for ln in _samples(text, "nixfleet_fleet_hosts")]
        both_online = any('online="true"' in ln and ln.endswith(" 2.0") for ln in lines)
        return lines if both_online else []

    # One replica, the oldest, counts the fleet; the other does not (no double counting).
    reports = wait_for(fleet_reports, 10, "the fleet-wide count of two hosts online")
    assert len(reports) == 2, reports  # online="true" and online="false", from one replica
    assert len({ln.split('replica="')[1].split('"')[0] for ln in reports}) == 1


def test_a_bulk_command_queued_on_both_replicas_at_once_runs_once_per_host(pair):
    p = pair(hosts=4, build_seconds=0.3)
    for host, name in (("atlas", "a"), ("borealis", "a"), ("cirrus", "b"), ("dune", "b")):
        p.start_agent(host, p.replica(name).port)
    on_a = p.login("a")
    on_b = p.acting_on(on_a, "b")
    hosts = ["atlas", "borealis", "cirrus", "dune"]
    on_a.wait_online(hosts)
    # Both replicas queue tests for every host at the same moment and both hubs claim.
    ids: list[str] = []
    for api in (on_a, on_b):
        res = api.post("/api/commands/bulk", {"command": "test", "host_ids": hosts})
        assert res.status_code == 202, res.text
        ids += [r["command_id"] for r in res.json()["results"] if "command_id" in r]
    assert len(ids) == 8
    done = [on_a.wait_state(cid, {"succeeded", "failed", "lost", "timed_out"}) for cid in ids]
    assert {c["state"] for c in done} <= {"succeeded", "failed"}
    # One at a time per host, whichever replica queued it: the runs never overlap.
    by_host: dict[str, list[tuple[float, float]]] = {}
    for cmd in done:
        by_host.setdefault(cmd["host_id"], []).append((cmd["started_at"], cmd["finished_at"]))
    assert sorted(by_host) == hosts
    for runs in by_host.values():
        (_, end_first), (start_second, _) = sorted(runs)
        assert end_first <= start_second


def test_guessing_on_one_replica_is_throttled_on_the_other(pair):
    p = pair(
        hosts=1,
        env={"NIXFLEET_LOGIN_FREE_FAILURES": "2", "NIXFLEET_LOGIN_BASE_DELAY_S": "300"},
    )
    for _ in range(3):
        res = httpx.post(f"{p.a.base}/login", data={"username": "admin", "password": "guess"})
        assert res.status_code in (401, 429)
    right = {"username": "admin", "password": p.rf.fleet.password}

    def refused_on_b() -> bool:
        res = httpx.post(f"{p.b.base}/login", data=right)
        assert res.status_code in (303, 429), res.text
        return res.status_code == 429

    # Even the right password waits: the guesses on a count on b too.
    assert wait_for(refused_on_b, 5, "b to throttle the account")
    res = httpx.post(f"{p.b.base}/login", data=right)
    assert res.status_code == 429 and int(res.headers["Retry-After"]) > 60


def _by_state(text: str) -> dict[str, tuple[str, float]]:
    """Return {deploy state: (reporting replica, hosts)} of one replica's /metrics."""
    out = {}
    for ln in _samples(text, "nixfleet_fleet_hosts_deploy"):
        labels, value = ln.rsplit(" ", 1)
        state = labels.split('state="')[1].split('"')[0]
        out[state] = (labels.split('replica="')[1].split('"')[0], float(value))
    return out


def test_hosts_per_deploy_state_are_counted_by_one_replica_and_by_the_next_when_it_dies(pair):
    p, on_b = _one_agent_on_each(pair, hosts=3, login_on="b")
    hosts = on_b.get("/api/hosts").json()["hosts"]
    expected = {
        s: 0.0 for s in ("current", "behind", "diverged", "never_deployed", "unknown", "failed")
    }
    for h in hosts:
        expected[h["deploy"]["state"]] += 1
    replica_of = {h["id"]: h["replica"] for h in hosts}

    def reports() -> list[dict[str, tuple[str, float]]] | None:
        found = [r for r in (_by_state(p.a.metrics()), _by_state(p.b.metrics())) if r]
        return found if found and {s: n for s, (_, n) in found[0].items()} == expected else None

    # Replica a started first: it alone reports, every state named, the fleet's 3 hosts.
    first = wait_for(reports, 15, "the fleet's hosts per deploy state")
    assert len(first) == 1
    assert {who for who, _ in first[0].values()} == {replica_of["atlas"]}
    assert _by_state(p.b.metrics()) == {}

    # a dies: once its lease runs out, b is the oldest live replica and reports instead.
    p.a.kill()

    def taken_over() -> dict[str, tuple[str, float]] | None:
        found = _by_state(p.b.metrics())
        return found if {who for who, _ in found.values()} == {replica_of["borealis"]} else None

    after = wait_for(taken_over, 6 * LEASE_S, "replica b to count the fleet")
    assert sum(n for _, n in after.values()) == 3
