"""The agent survives a refusing or vanished dashboard without flooding it, and limits
how many commands it starts; the dashboard shows how each host's connection is doing."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from conftest import wait_for
from tlsservers import Recorder, TLSProxy, pin_of, pinned_agent_args, server_context

FAST = ["--backoff-floor", "0.05", "--backoff-cap", "0.3", "--log-level", "info"]


def test_a_dashboard_answering_401_sees_attempts_spread_on_the_auth_backoff(agent):
    server = Recorder(
        None,
        reply=b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    try:
        proc = agent(
            f"http://127.0.0.1:{server.port}",
            "--allow-insecure",
            "--backoff-floor",
            "0.2",
            "--backoff-cap",
            "1.6",
        )
        wait_for(lambda: len(server.attempts) >= 5, 60, "five attempts")
        gaps = [b - a for a, b in zip(server.attempts, server.attempts[1:], strict=False)]
        # floor 0.2 s, but a refused token waits at least half the ceiling (0.8 s) more:
        # without backoff a loop would have made hundreds of attempts in the same time.
        assert min(gaps) >= 0.95, gaps
        assert "HTTP 401" in proc.log()
        assert "INSECURE" in proc.log()
    finally:
        server.close()


def test_the_breaker_opens_while_the_dashboard_is_down_and_a_probe_delivers_the_output(
    make_fleet,
):
    rf = make_fleet(hosts=1, build_seconds=4, agents=False)
    rf.start_agent("atlas", args=[*FAST, "--breaker-threshold", "3", "--probe-interval", "2"])
    api = rf.api()
    api.wait_online(["atlas"])
    cid = api.command("atlas", "switch")
    wait_for(lambda: api.get(f"/api/commands/{cid}").json()["output"], 30, "first output")
    rf.kill_dashboard()
    log = rf.host("atlas").root / "agent.log"
    wait_for(lambda: "circuit breaker closed → open" in log.read_text(), 30, "the breaker")
    journal = rf.host("atlas").root / "state" / "journal"
    wait_for(lambda: list(journal.glob("*/exit.json")), 30, "the build to end offline")
    rf.start_dashboard()
    api = rf.api()
    cmd = api.wait_state(cid, {"succeeded", "failed", "lost"}, timeout=60)
    assert cmd["state"] == "succeeded", cmd["detail"]
    seqs = [line["seq"] for line in cmd["output"]]
    assert seqs == list(range(1, len(seqs) + 1))
    health = api.host("atlas")["connection"]
    assert health["breaker"]["state"] == "half_open"  # it came back through a probe
    assert health["breaker"]["failed_attempts"] >= 3
    assert health["reconnects_1h"] == 1
    assert health["connected_since"] is not None
    text = log.read_text()
    assert "half_open → closed" in text
    assert text.count("closed → open") == 1  # state changes, not every failure


def test_tls_failures_are_reported_on_the_next_good_connection_and_shown(make_fleet, ca):
    authority, ca_file = ca
    good, wrong_key = authority.issue_cert("127.0.0.1"), authority.issue_cert("127.0.0.1")
    rf = make_fleet(hosts=1, agents=False)
    rf.kill_dashboard()
    rf.start_dashboard(log_level="info")  # security events are logged at info
    proxy = TLSProxy(server_context(wrong_key), rf.port)
    try:
        rf.start_agent("atlas", args=pinned_agent_args(proxy, ca_file, pin_of(good)))
        log = rf.host("atlas").root / "agent.log"
        wait_for(lambda: "pin_mismatch (3 so far)" in log.read_text(), 30, "three failures")
        proxy.set_context(server_context(good))
        api = rf.api()
        api.wait_online(["atlas"])
        failure = api.host("atlas")["connection"]["tls_failure"]
        assert failure["kind"] == "pin_mismatch"
        assert failure["count"] >= 3
        # One security event per reported kind, for the event log and alerts (issue 7).
        events = [
            line
            for line in (rf.fleet.root / "dashboard.log").read_text().splitlines()
            if "security: tls_failure" in line
        ]
        assert len(events) == 1
        assert "detail=pin_mismatch" in events[0] and "host=atlas" in events[0]
    finally:
        proxy.close()


def test_a_command_over_the_agents_rate_limit_is_reported_rejected(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=0.2, agents=False)
    rf.start_agent("atlas", args=["--command-rate", "2/3600"])
    api = rf.api()
    api.wait_online(["atlas"])
    for _ in range(2):
        cmd = api.wait_state(api.command("atlas", "switch"), {"succeeded", "failed"})
        assert cmd["state"] == "succeeded", cmd["detail"]
    third = api.wait_state(api.command("atlas", "switch"), {"succeeded", "failed"})
    assert third["state"] == "failed"
    assert third["detail"].startswith("rejected: rate limited: at most 2 commands per 3600 s")
    assert third["exit_code"] is None
    assert api.get(f"/api/commands/{third['id']}").json()["output"] == []


@pytest.mark.parametrize(
    "transport",
    [
        {"tls_failures": [{"kind": "<script>", "count": 1, "age_s": 1}]},
        {"tls_failures": [{"kind": "pin_mismatch", "count": 0, "age_s": 1}]},
        {"tls_failures": [{"kind": "expired", "count": 1, "age_s": -5}]},
        {"breaker": "exploded"},
    ],
)
def test_a_malformed_transport_report_is_refused_and_stores_nothing(make_fleet, transport):
    rf = make_fleet(hosts=1, agents=False)
    token = rf.host("atlas").token_file.read_text()

    async def attempt() -> int:
        async with websockets.connect(
            rf.base.replace("http", "ws") + "/api/agent/ws",
            additional_headers={"Authorization": f"Bearer {token}", "X-NixFleet-Host": "atlas"},
        ) as ws:
            hello = {
                "type": "hello",
                "protocol": 1,
                "host_id": "atlas",
                "agent_version": "x",
                "status": {},
                "transport": transport,
            }
            await ws.send(json.dumps(hello))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code

    assert asyncio.run(attempt()) == 4400
    host = rf.api().host("atlas")
    assert not host["online"]
    assert host["connection"]["tls_failure"] is None
