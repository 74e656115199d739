"""Health-gated switches ("magic rollback") on real Nix profiles, real agents and a real
dashboard: a failing check rolls the host back by itself, a passing gate keeps the new
generation, and every field of a gate is bounded."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningFleet, run_cli, wait_for
from nixfleet.core.errors import for_people
from nixfleet.demo.configrepo import WORK_NAME, commit_change
from nixfleet.demo.run import prepare, start_agent, start_network


class _Web:
    """A loopback web service a check probes; `code` is what it answers."""

    def __init__(self) -> None:
        self.code = 200
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(web.code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def web() -> Iterator[_Web]:
    service = _Web()
    yield service
    service.server.shutdown()
    service.server.server_close()


def generation(profile: Path) -> tuple[int, str]:
    """Return the profile's current generation number and system, read from its links."""
    link = profile.readlink().name  # system-N-link
    return int(link.split("-")[-2]), str(profile.resolve())


def switch(api: Any, gate: dict[str, Any] | None) -> dict[str, Any]:
    res = api.post("/api/hosts/atlas/command", {"command": "pull-switch", "gate": gate})
    assert res.status_code == 202, res.text
    return dict(
        api.wait_state(res.json()["command_id"], {"succeeded", "failed", "rolled_back"}, 60)
    )


# The module's deploys share one agent: more than its default 6 commands in 10 minutes.
AGENT_ARGS = ["--command-rate", "1000/60"]


@pytest.fixture(scope="module")
def one_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    """One host and its agent, shared by the module's deploys (each makes a new commit)."""
    rf = RunningFleet(prepare(tmp_path_factory.mktemp("gated"), 1, failing=()), uuid.uuid4().hex, 0)
    rf.start_dashboard()
    rf.start_agent("atlas", args=AGENT_ARGS)
    rf.api().wait_online(["atlas"])
    yield rf
    rf.stop()


@pytest.fixture
def deployed(one_host: RunningFleet) -> Iterator[tuple[RunningFleet, tuple[int, str]]]:
    """Return the host with a new commit to deploy, and the generation it runs now."""
    rf = one_host
    commit_change(rf.fleet.root / "config", "a newer config")  # a new system to switch to
    yield rf, generation(rf.host("atlas").profile)
    api = rf.api()
    api.http.put(
        "/api/hosts/atlas/health-gate", json={"gate": None}, headers={"X-CSRF-Token": api.csrf}
    )


def test_a_failing_health_check_rolls_the_host_back_to_its_previous_generation(deployed, web):
    rf, before = deployed
    web.code = 502
    gate = {"deadline_s": 2, "checks": [{"kind": "http", "name": "web", "url": web.url}]}
    cmd = switch(rf.api(), gate)
    assert cmd["state"] == "rolled_back"
    assert cmd["detail"] == "health check web: HTTP 502"
    # The real profile: a new generation was made, then the rollback made the old one current.
    number, system = generation(rf.host("atlas").profile)
    assert (number, system) == before
    assert (rf.host("atlas").system_dir / "current-system").resolve() == Path(system)
    lines = [ln["text"] for ln in rf.api().get(f"/api/commands/{cmd['id']}").json()["output"]]
    assert any("rolling back to the previous generation" in t for t in lines)
    host = rf.api().host("atlas")
    assert host["deploy"]["state"] == "failed"
    assert host["deploy"]["last"]["result"] == "rolled_back"
    # Again, with the rolled-back generation still in the profile: back to the one before
    # this switch, not to the next lower number (the generation rolled back from).
    commit_change(rf.fleet.root / "config", "another try")
    cmd = switch(rf.api(), gate)
    assert cmd["state"] == "rolled_back"
    assert generation(rf.host("atlas").profile) == before


def test_a_passing_gate_keeps_the_new_generation(deployed, web):
    rf, before = deployed
    checks = [{"kind": "http", "name": "web", "url": web.url}, {"kind": "unit", "unit": "sshd"}]
    cmd = switch(rf.api(), {"deadline_s": 20, "checks": checks})
    assert cmd["state"] == "succeeded", cmd["detail"]
    assert cmd["gate"]["checks"][0]["name"] == "web"
    number, system = generation(rf.host("atlas").profile)
    assert number > before[0] and system != before[1]
    lines = [ln["text"] for ln in rf.api().get(f"/api/commands/{cmd['id']}").json()["output"]]
    assert "health gate: the agent reached the dashboard" in lines
    assert "PASS web" in lines
    assert "PASS sshd" in lines  # `systemctl is-active` (the demo's stand-in) on the new system
    assert "health gate passed: keeping the new generation" in lines


def test_a_switch_that_cuts_the_host_off_is_rolled_back_by_the_host_alone(make_fleet):
    """The new system drops outgoing connections (the demo's network stand-in honours it):
    the agent cannot reach the dashboard, the runner rolls back on its own, the network is
    back, and the row says rolled_back with the reason once the agent reconnects."""
    rf: RunningFleet = make_fleet(hosts=1, build_seconds=0, failing=(), agents=False)
    host = rf.host("atlas")
    network, ports = start_network(rf.fleet, [host], rf.port)
    try:
        rf.agents["atlas"] = start_agent(
            rf.fleet, host, ports["atlas"], 0, {"NIXFLEET_TEST_MARK": rf.mark},
            ["--backoff-cap", "0.3", "--probe-interval", "0.3"],
        )  # fmt: skip
        api = rf.api()
        api.wait_online(["atlas"])
        before = generation(host.profile)
        path = "hosts/atlas/configuration.nix"
        config = (rf.fleet.root / "config" / WORK_NAME / path).read_text()
        broken = config.replace(
            "  time.timeZone", "  networking.firewall.dropOutgoing = true;\n  time.timeZone"
        )
        commit_change(rf.fleet.root / "config", "firewall: drop outgoing", path, broken)

        cmd = switch(api, {"deadline_s": 3})
        assert cmd["state"] == "rolled_back"
        assert cmd["detail"] == "the agent did not reach the dashboard within 3 s"
        assert generation(host.profile) == before
        log = (rf.fleet.root / "network.log").read_text()
        # The agent was cut off by the new system and tried again while it ran, in vain.
        assert "atlas: cut the agent's connection to the dashboard" in log
        assert "atlas: refused a connection to the dashboard" in log
        lines = [ln["text"] for ln in api.get(f"/api/commands/{cmd['id']}").json()["output"]]
        assert "health gate: the agent reached the dashboard" not in lines
        assert "rolled back to the previous generation" in lines
        api.wait_online(["atlas"])
        assert api.host("atlas")["deploy"]["last"]["result"] == "rolled_back"
    finally:
        network.terminate()
        network.wait(5)


def lines_of(api: Any, command_id: str) -> list[str]:
    return [ln["text"] for ln in api.get(f"/api/commands/{command_id}").json()["output"]]


def test_the_gate_outlives_its_agent_and_a_stop_during_it_rolls_back(deployed):
    rf, before = deployed
    api = rf.api()
    with socket.socket() as probe:  # a port nothing listens on, until the test opens it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gate = {"deadline_s": 60, "checks": [{"kind": "tcp", "name": "db", "port": port}]}
    res = api.post("/api/hosts/atlas/command", {"command": "pull-switch", "gate": gate})
    cid = res.json()["command_id"]
    wait_for(lambda: "health gate: the agent reached the dashboard" in lines_of(api, cid), 40)
    rf.kill_agent("atlas")  # the runner goes on waiting for the check by itself
    with socket.create_server(("127.0.0.1", port)):
        rf.start_agent("atlas", args=AGENT_ARGS)
        cmd = api.wait_state(cid, {"succeeded", "failed", "rolled_back"}, 40)
    assert cmd["state"] == "succeeded", cmd["detail"]
    assert "PASS db" in lines_of(api, cid)
    kept = generation(rf.host("atlas").profile)
    assert kept[0] > before[0]

    def stopped_in_gate(kind: str) -> dict[str, Any]:
        res = api.post("/api/hosts/atlas/command", {"command": kind, "gate": gate})
        cid = res.json()["command_id"]
        wait_for(lambda: any(t.startswith("health gate: keep") for t in lines_of(api, cid)), 40)
        assert api.post("/api/hosts/atlas/command", {"command": "stop"}).status_code == 202
        return dict(api.wait_state(cid, {"succeeded", "failed", "rolled_back", "cancelled"}, 40))

    # The port is closed again. A switch to the running system makes no new generation:
    # stopped during its gate, nothing is undone (that would undo the deploy before) and it
    # fails; a switch that made one is rolled back at once.
    cmd = stopped_in_gate("switch")
    assert cmd["state"] == "failed"
    assert cmd["detail"] == (
        "stopped during the health gate; the switch made no new generation, so none was undone"
    )
    assert generation(rf.host("atlas").profile) == kept
    commit_change(rf.fleet.root / "config", "newer", "hosts/atlas/motd.txt", "newer\n")
    cmd = stopped_in_gate("pull-switch")
    assert (cmd["state"], cmd["detail"]) == ("rolled_back", "stopped during the health gate")
    assert generation(rf.host("atlas").profile) == kept


def test_a_host_default_gate_is_carried_by_its_switches_and_failing_tests_roll_back(deployed):
    rf, before = deployed
    api = rf.api()
    res = api.http.put(
        "/api/hosts/atlas/health-gate",
        json={"gate": {"deadline_s": 2, "checks": [{"kind": "tests"}]}},
        headers={"X-CSRF-Token": api.csrf},
    )
    assert res.status_code == 200, res.text
    # The new commit's host tests fail: the switch is rolled back by the host's default gate.
    commit_change(
        rf.fleet.root / "config",
        "a broken service",
        "hosts/atlas/tests/T09-web.sh",
        "#!/bin/sh\necho 'web answers 502'\nexit 1\n",
    )
    res = api.post("/api/hosts/atlas/command", {"command": "pull-switch"})
    assert res.status_code == 202, res.text
    assert res.json()["gate"]["checks"] == [{"kind": "tests", "name": None}]
    cmd = api.wait_state(res.json()["command_id"], {"succeeded", "failed", "rolled_back"}, 60)
    assert cmd["state"] == "rolled_back"
    assert cmd["detail"] == "health check tests: T09-web.sh exit 1: web answers 502"
    assert generation(rf.host("atlas").profile) == before
    audit = api.get("/api/audit").json()
    assert any(e["action"] == "health_gate" for e in audit["entries"])
    # no_gate switches without it: the new generation stays although its tests fail.
    res = api.post("/api/hosts/atlas/command", {"command": "pull-switch", "no_gate": True})
    assert res.json()["gate"] is None
    cmd = api.wait_state(res.json()["command_id"], {"succeeded", "failed", "rolled_back"}, 60)
    assert cmd["state"] == "succeeded", cmd["detail"]
    assert generation(rf.host("atlas").profile)[0] > before[0]


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    """One dashboard without agents for the refusals: nothing may ever be queued on it."""
    rf = RunningFleet(prepare(tmp_path_factory.mktemp("gates"), 1, failing=()), uuid.uuid4().hex, 0)
    rf.start_dashboard()
    yield rf
    rf.stop()


def gated(*checks: dict[str, Any], **gate: Any) -> dict[str, Any]:
    return {"command": "switch", "gate": {**gate, **({"checks": list(checks)} if checks else {})}}


@pytest.mark.parametrize(
    ("body", "sentence"),
    [
        (gated(deadline_s=0.5), "deadline_s"),
        (gated(deadline_s=3601), "deadline_s"),
        (gated(*[{"kind": "tests"}] * 17), "checks"),
        (gated({"kind": "unit", "unit": "a b"}), "unit"),
        (gated({"kind": "tcp", "port": 0}), "port"),
        (gated({"kind": "http", "url": "file:///etc/shadow"}), "url"),
        (gated({"kind": "http", "url": "http://x/" + "a" * 2100}), "url"),
        (gated({"kind": "shell", "argv": ["rm", "-rf", "/"]}), "shell"),
        (gated({"kind": "tests", "name": "x" * 41}), "name"),
        (gated(deadline_s=10, extra=1), "extra"),
    ],
)
def test_a_gate_out_of_bounds_is_refused_with_422_and_nothing_queued(idle, body, sentence):
    api = idle.api()
    res = api.post("/api/hosts/atlas/command", body)
    assert res.status_code == 422, res.text
    assert sentence in res.json()["detail"]
    assert api.get("/api/hosts/atlas/commands").json()["commands"] == []


def test_a_gate_on_a_kind_that_activates_nothing_is_refused(idle):
    api = idle.api()
    res = api.post("/api/hosts/atlas/command", {"command": "rollback", "gate": {"deadline_s": 5}})
    assert res.status_code == 422, res.text
    assert res.json()["detail"] == for_people(
        "commands: a health gate goes with switch or pull-switch, not on 'rollback'"
    )
    res = api.http.put(
        "/api/hosts/nohost/health-gate", json={"gate": None}, headers={"X-CSRF-Token": api.csrf}
    )
    assert res.status_code == 404
    assert api.get("/api/hosts/atlas/commands").json()["commands"] == []


def test_a_host_default_gate_is_set_from_the_cli_audited_and_bounded(idle):
    env = idle.fleet.env
    bad = run_cli(["admin", "host", "gate", "atlas", '{"deadline_s": 0}'], env)
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith(
        "host gate: deadline_s: Input should be greater than or equal to 1"
    )
    gate = '{"deadline_s": 30, "checks": [{"kind": "unit", "unit": "nginx"}]}'
    res = run_cli(["admin", "host", "gate", "atlas", gate], env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith('atlas: {"deadline_s": 30.0, "confirm": true, "checks": [')
    assert res.stdout.strip().endswith("(the host's default)")
    api = idle.api()
    shown = api.host("atlas")["deploy"]["gate"]
    assert (shown["source"], shown["checks"][0]["unit"]) == ("host", "nginx")
    entries = api.get("/api/audit").json()["entries"]
    assert any(e["action"] == "health_gate" and e["actor"].startswith("cli:") for e in entries)
    cleared = run_cli(["admin", "host", "gate", "atlas", "none"], env)
    assert cleared.stdout.strip() == "atlas: no health gate"
    assert api.host("atlas")["deploy"]["gate"] is None
