"""Deploy notifications reach a real webhook (Apprise json://) on loopback: a failed
deploy once per cooldown, a rollout stopped by its budget with its report (its own
failures not sent one by one), and an event switched off in the rules file stays silent."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from test_security_alerts import Receiver

from conftest import RunningFleet, wait_for

RULES = """
[[deploy]]
event = "deploy_failed"
cooldown_s = 3600

[[deploy]]
event = "rollout_finished"
enabled = false
"""


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def test_deploy_failures_and_a_stopped_rollout_are_sent_and_the_cooldown_holds(
    make_fleet, webhook: Receiver, tmp_path
):
    rules = tmp_path / "alerts.toml"
    rules.write_text(RULES)
    rf: RunningFleet = make_fleet(
        hosts=4,
        build_seconds=0.3,
        env={
            "NIXFLEET_ALERT_RULES_FILE": str(rules),
            "NIXFLEET_ALERT_URLS": f"json://127.0.0.1:{webhook.port}/hook?rto=30",
            "NIXFLEET_ALERT_ALLOW_PRIVATE": "true",
        },
    )  # dune's build is set up to fail
    api = rf.api()
    first = api.command("dune", "switch")
    assert api.wait_state(first, {"failed", "succeeded"})["state"] == "failed"
    wait_for(lambda: webhook.titles() == ["NixFleet deploy failed: dune"], 20, "the alert")
    assert "switch on dune failed" in webhook.bodies[0]["message"]
    again = api.command("dune", "switch")  # inside the cooldown: held back
    api.wait_state(again, {"failed", "succeeded"})

    ok = api.post("/api/rollouts", {"command": "switch", "host_ids": ["atlas"]}).json()
    stopped = api.post(
        "/api/rollouts",
        {"command": "switch", "host_ids": ["cirrus", "dune"], "policy": {"canary": 2}},
    ).json()
    for rid in (ok["id"], stopped["id"]):
        wait_for(
            lambda r=rid: api.get(f"/api/rollouts/{r}").json()["state"] in ("completed", "stopped"),
            40,
            "the rollouts to end",
        )
    wait_for(lambda: len(webhook.titles()) >= 2, 20, "the rollout's alert")
    time.sleep(1)  # anything else would have arrived by now
    assert webhook.titles() == [
        "NixFleet deploy failed: dune",
        "NixFleet rollout stopped: switch on 2 hosts",
    ]
    report = webhook.bodies[1]["message"]
    assert "1 failed (exit 1)" in report and report.endswith("stopped by the failure budget")


def test_a_deploy_rolled_back_by_its_health_gate_is_an_alert_with_the_reason(
    make_fleet, webhook: Receiver
):
    rf: RunningFleet = make_fleet(
        hosts=1,
        build_seconds=0,
        failing=(),
        env={
            "NIXFLEET_ALERT_URLS": f"json://127.0.0.1:{webhook.port}/hook?rto=30",
            "NIXFLEET_ALERT_ALLOW_PRIVATE": "true",
        },
    )
    api = rf.api()
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    gate = {"deadline_s": 1, "checks": [{"kind": "tcp", "name": "db", "port": port}]}
    res = api.post("/api/hosts/atlas/command", {"command": "switch", "gate": gate})
    cmd = api.wait_state(res.json()["command_id"], {"succeeded", "failed", "rolled_back"})
    assert cmd["state"] == "rolled_back"
    wait_for(lambda: webhook.titles() == ["NixFleet deploy rolled back: atlas"], 20, "the alert")
    assert webhook.bodies[0]["message"] == (
        "switch on atlas rolled back: health check db: Connection refused."
    )
