"""Per-host agent identity: a token speaks for one host only; enrollment codes work once;
rotation and revocation stop the old token at once and cut the live agent off with a
close code that says why; no token is ever stored or logged in clear."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from conftest import wait_for


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://").replace("https://", "wss://") + "/api/agent/ws"


def handshake(base: str, host_id: str, token: str, ssl=None) -> int:
    """Return the HTTP status of an agent handshake (101 when the WebSocket opened)."""

    async def attempt() -> int:
        headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": host_id}
        try:
            ws = await websockets.connect(
                _ws_url(base), additional_headers=headers, open_timeout=5, ssl=ssl
            )
        except InvalidStatus as exc:
            return exc.response.status_code
        await ws.close()
        return 101

    return asyncio.run(attempt())


def dashboard_log(rf) -> str:
    return (rf.fleet.root / "dashboard.log").read_text(errors="replace")


def agent_log(rf, host_id: str) -> str:
    return (rf.host(host_id).root / "agent.log").read_text(errors="replace")


def assert_nowhere_in_clear(rf, secrets: list[str]) -> None:
    """The database file and every log of the fleet hold none of the secrets."""
    files = [rf.fleet.root / "dashboard" / "nixfleet.db", rf.fleet.root / "dashboard.log"]
    files += [h.root / "agent.log" for h in rf.fleet.hosts if (h.root / "agent.log").exists()]
    for path in files:
        raw = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in raw, f"a secret in clear in {path.name}"


INFO = ["--log-level", "info"]


def test_a_token_presented_for_another_host_is_refused_and_counted_as_cross_host(make_fleet):
    rf = make_fleet(hosts=2, agents=False)
    atlas = rf.host("atlas").token_file.read_text().strip()
    assert handshake(rf.base, "borealis", atlas) == 401
    assert handshake(rf.base, "atlas", atlas) == 101
    wait_for(lambda: "cross_host" in dashboard_log(rf), 10, "the cross-host refusal logged")
    assert_nowhere_in_clear(rf, [atlas])


def test_enrollment_by_code_end_to_end_and_the_code_works_once(make_fleet):
    rf = make_fleet(hosts=2, agents=False)
    api = rf.api()
    res = api.http.delete("/api/hosts/atlas", headers={"X-CSRF-Token": api.csrf})
    assert res.status_code == 200
    added = api.post("/api/hosts", {"host_id": "atlas"}).json()
    code = added["enroll_code"]
    assert code.startswith("nfe_")
    assert added["host"]["identity_state"] == "none"
    host = rf.host("atlas")
    host.token_file.unlink()
    code_file = host.root / "enroll-code"
    code_file.write_text(code)
    rf.start_agent("atlas", args=["--enroll-code-file", str(code_file), *INFO])
    api.wait_online(["atlas"])
    token = host.token_file.read_text().strip()
    assert token.startswith("nfa_")
    assert stat.S_IMODE(host.token_file.stat().st_mode) == 0o600
    shown = api.host("atlas")
    assert shown["identity_state"] == "active"
    assert shown["token_used_at"] is not None
    assert shown["token_used_from"] == "127.0.0.1"

    again = httpx.post(f"{rf.base}/api/agent/enroll", json={"host_id": "atlas", "code": code})
    assert again.status_code == 401
    assert again.json()["error"] == "unauthorized"
    wrong = httpx.post(
        f"{rf.base}/api/agent/enroll", json={"host_id": "atlas", "code": "nfe_guess"}
    )
    assert wrong.status_code == 401
    other = api.post("/api/hosts/borealis/enroll-code").json()["enroll_code"]
    cross = httpx.post(f"{rf.base}/api/agent/enroll", json={"host_id": "atlas", "code": other})
    assert cross.status_code == 401
    log = dashboard_log(rf)
    assert "used" in log and "wrong" in log
    # The agent kept its token: still online, and its token still opens a connection.
    assert api.host("atlas")["online"]
    assert_nowhere_in_clear(rf, [token, code, other])


def test_an_expired_enrollment_code_is_refused(make_fleet):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_ENROLL_CODE_TTL_S": "1"})
    api = rf.api()
    issued = api.post("/api/hosts/atlas/enroll-code").json()
    wait_for(lambda: time.time() > issued["enroll_expires_at"] + 0.2, 10, "the code to expire")
    res = httpx.post(
        f"{rf.base}/api/agent/enroll", json={"host_id": "atlas", "code": issued["enroll_code"]}
    )
    assert res.status_code == 401
    wait_for(lambda: "expired" in dashboard_log(rf), 10, "the expired refusal logged")


@pytest.mark.parametrize(
    "body",
    [{}, {"host_id": "atlas"}, {"host_id": "Bad_Host", "code": "x"}, {"code": "x" * 500}],
)
def test_a_malformed_enrollment_gets_a_clear_4xx(make_fleet, body):
    rf = make_fleet(hosts=1, agents=False)
    res = httpx.post(f"{rf.base}/api/agent/enroll", json=body)
    assert 400 <= res.status_code < 500
    assert "error" in res.json()
