"""Logs cannot be forged, never hold a secret at any level, and do not flood: each logged
field is escaped, credentials are redacted at the handler, unknown user names are never
kept as typed, and refused agent handshakes log no traceback."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from conftest import wait_for

FORGED = "x\n2026-01-01 00:00:00,000 INFO nixfleet.security: security: login outcome=ok"
ESCAPE = "\x1b[31mred\x1b[0m"
TYPED_PASSWORD = "correct-horse-battery-staple-42"


def _restart_at(fleet, level: str) -> None:
    fleet.kill_dashboard()
    fleet.start_dashboard(log_level=level)


def _log(fleet) -> str:
    return (fleet.fleet.root / "dashboard.log").read_text(errors="replace")


@pytest.mark.parametrize("level", ["debug", "trace"])
def test_no_log_level_prints_a_token_a_code_a_cookie_or_a_csrf_token(make_fleet, level):
    fleet = make_fleet(hosts=1, agents=False)
    _restart_at(fleet, level)
    fleet.start_agent("atlas")
    api = fleet.api()
    api.wait_online(["atlas"])
    code = api.post("/api/hosts", {"host_id": "web-01"}).json()["enroll_code"]
    token = api.post("/api/hosts/web-01/agent-token").json()["agent_token"]
    agent_token = fleet.host("atlas").token_file.read_text().strip()
    cookie = api.http.cookies["nixfleet_session"]
    text = _log(fleet)
    assert "atlas" in text  # the log is there, and verbose
    for secret in (agent_token, token, code, api.csrf, cookie, fleet.fleet.password):
        assert secret not in text
        assert secret[8:30] not in text


def test_user_names_and_host_ids_cannot_forge_a_line_or_send_escapes(make_fleet):
    fleet = make_fleet(hosts=1, agents=False)
    _restart_at(fleet, "info")
    httpx.post(f"{fleet.base}/login", data={"username": FORGED + ESCAPE, "password": "x"})
    enroll = httpx.post(
        f"{fleet.base}/api/agent/enroll",
        json={"host_id": FORGED[:50] + ESCAPE[:5], "code": "nfe_guess"},
    )
    assert enroll.status_code in (401, 422)
    admin = fleet.api()
    admin.post("/api/hosts/" + "a%0Ab%1B[2J/command", {"command": "switch"})

    def logged() -> str | None:
        text = _log(fleet)
        return text if text.count("auth_failure") >= 2 else None

    text = wait_for(logged, what="the refused login in the log")
    assert "\x1b" not in text
    assert "host=x\\n2026-01-01 00:00:00,000 INFO nixfleet.security: \\x1b[31" in text
    assert "\\x1b[31m" in text  # shown, escaped, on the one line it belongs to
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith("2026-01-01 00:00:00,000")]
    assert [line for line in lines if "outcome=ok" in line and "login" in line] == [
        line for line in lines if "security: login outcome=ok" in line and "user=admin" in line
    ]


def test_a_password_typed_as_user_name_is_kept_nowhere(make_fleet):
    fleet = make_fleet(hosts=1, agents=False)
    api = fleet.api()
    with api.http.stream("GET", "/api/events", timeout=10) as stream:
        res = httpx.post(f"{fleet.base}/login", data={"username": TYPED_PASSWORD, "password": "x"})
        assert res.status_code == 401
        seen = ""
        for chunk in stream.iter_text():
            seen += chunk
            if "event: security" in seen:
                break

    def stored() -> list[dict] | None:
        found = api.get("/api/audit?action=login").json()["entries"]
        return found if any(e["result"] == "refused" for e in found) else None

    audit = wait_for(stored, what="the refused login in the audit log")
    events = api.get("/api/security/summary").json()
    refused = next(e for e in audit if e["result"] == "refused")
    assert refused["actor"].startswith("unknown:")
    assert refused["actor"].endswith(f":{len(TYPED_PASSWORD)}")
    for where in (_log(fleet), seen, json.dumps(audit), json.dumps(events)):
        assert TYPED_PASSWORD not in where
    db = (fleet.fleet.root / "dashboard" / "nixfleet.db").read_bytes()
    assert TYPED_PASSWORD.encode() not in db


def test_refused_agent_handshakes_log_no_traceback_and_do_not_flood(make_fleet):
    fleet = make_fleet(hosts=1, agents=False)
    _restart_at(fleet, "info")
    url = f"ws://127.0.0.1:{fleet.port}/api/agent/ws"

    async def knock(n: int) -> list[int]:
        statuses = []
        for i in range(n):
            headers = {"Authorization": f"Bearer nfa_revoked{'x' * 30}", "X-NixFleet-Host": "atlas"}
            try:
                async with websockets.connect(url, additional_headers=headers, open_timeout=5):
                    statuses.append(101)
            except websockets.InvalidStatus as exc:
                statuses.append(exc.response.status_code)
            if i % 5 == 0:  # and some that hang up before reading the answer
                _, writer = await asyncio.open_connection("127.0.0.1", fleet.port)
                writer.write(
                    b"GET /api/agent/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer nfa_x\r\n\r\n"
                )
                writer.close()
        return statuses

    assert set(asyncio.run(knock(40))) == {401}
    text = _log(fleet)
    assert "Traceback" not in text and " ERROR " not in text
    refusals = [line for line in text.splitlines() if "agent_ws: refused" in line]
    assert 1 <= len(refusals) <= 3  # the same refusal is logged once a minute, not 40 times
    assert "connection rejected" not in text
