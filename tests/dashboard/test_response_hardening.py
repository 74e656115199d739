"""Answers that carry a secret are never cached, a refused agent handshake carries the
hardening headers, a 405 says what is allowed, the Host header must name this dashboard
(DNS rebinding), and the demo's relaxed secrets are refused off loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest
import websockets.sync.client as ws_client
from websockets.exceptions import InvalidStatus


@pytest.fixture(scope="module")
def idle(make_module_fleet):
    """One default fleet for the tests that only read or add a host of their own."""
    return make_module_fleet(hosts=1, agents=False)


def test_answers_with_codes_tokens_or_csrf_tokens_are_not_stored(idle):
    fleet = idle
    api = fleet.api()
    added = api.post("/api/hosts", {"host_id": "web-01"})
    rotated = api.post("/api/hosts/web-01/agent-token")
    code = api.post("/api/hosts/web-01/enroll-code")
    page = api.get("/")
    for res in (added, rotated, code, page, api.get("/api/hosts")):
        assert res.is_success, res.text
        assert res.headers["cache-control"] == "no-store"
    assert "no-store" not in api.get("/static/app.css").headers.get("cache-control", "")


def test_a_refused_agent_handshake_carries_the_hardening_headers(idle):
    fleet = idle
    headers = {
        "Authorization": "Bearer nfa_wrong-token-xxxxxxxxxxxxxxxx",
        "X-NixFleet-Host": "atlas",
    }
    try:
        ws_client.connect(f"ws://127.0.0.1:{fleet.port}/api/agent/ws", additional_headers=headers)
        raise AssertionError("the handshake was accepted")
    except InvalidStatus as exc:
        res = exc.response
    assert res.status_code == 401
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in res.headers["content-security-policy"]
    assert res.headers["cache-control"] == "no-store"


def test_a_wrong_method_gets_405_with_allow(idle):
    fleet = idle
    res = httpx.put(f"{fleet.base}/login")
    assert res.status_code == 405
    assert set(res.headers["allow"].split(", ")) == {"GET", "POST"}
    res = httpx.patch(f"{fleet.base}/api/hosts")
    assert res.status_code == 405
    assert {"GET", "POST"} <= set(res.headers["allow"].split(", "))


def test_a_foreign_host_name_is_refused_and_a_configured_one_passes(make_fleet):
    fleet = make_fleet(hosts=1, agents=False, env={"NIXFLEET_ALLOWED_HOSTS": "fleet.example.org"})
    base = fleet.base
    rebinding = httpx.get(f"{base}/login", headers={"Host": "evil.example"})
    assert rebinding.status_code == 421
    assert rebinding.json()["error"] == "misdirected"
    assert httpx.post(f"{base}/login", headers={"Host": "evil.example:80"}).status_code == 421
    for good in (
        "fleet.example.org",
        "FLEET.example.org:8443",
        "127.0.0.1:1",
        "localhost",
        "[::1]:9",
    ):
        assert httpx.get(f"{base}/login", headers={"Host": good}).status_code == 200, good
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=10) as sock:
        sock.sendall(
            b"GET /api/agent/ws HTTP/1.1\r\nHost: evil.example\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert sock.recv(200).startswith(b"HTTP/1.1 421")


def test_the_demo_mode_refuses_a_non_loopback_address(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEET_")}
    env = {**clean, "NIXFLEET_DEMO": "true", "NIXFLEET_DATA_DIR": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "nixfleet", "serve", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "NIXFLEET_DEMO" in res.stderr and "loopback" in res.stderr
