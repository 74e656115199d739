"""Credentials hold across replicas: a TOTP code used on one is refused on the other, an
enrollment code issued on one is redeemed once on either, a token rotated on one is the
only one the other accepts."""

from __future__ import annotations

import httpx
import pyotp
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import Api

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def _login(base: str, password: str, code: str) -> httpx.Response:
    form = {"username": "admin", "password": password, "code": code}
    return httpx.post(f"{base}/login", data=form, timeout=10)


def _session(base: str, res: httpx.Response) -> Api:
    api = Api.__new__(Api)
    api.http = httpx.Client(base_url=base, timeout=10, cookies=res.cookies)
    api.csrf = api.http.get("/").text.split('name="csrf-token" content="')[1].split('"')[0]
    return api


def _dial(port: int, host_id: str, token: str) -> None:
    """Open and close an agent WebSocket with this token (InvalidStatus when refused)."""
    headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": host_id}
    with connect(f"ws://127.0.0.1:{port}/api/agent/ws", additional_headers=headers):
        pass


def test_totp_enrollment_codes_and_token_rotation_hold_across_replicas(pair):
    p = pair(hosts=1, env={"NIXFLEET_TOTP_SECRET": SECRET, "NIXFLEET_REQUIRE_TOTP": "true"})
    password = p.rf.fleet.password
    code = pyotp.TOTP(SECRET).now()
    used = _login(p.a.base, password, code)
    assert used.status_code == 303, used.text
    # The same code, replayed on the other replica within its step: refused.
    replayed = _login(p.b.base, password, code)
    assert replayed.status_code == 401
    on_a = _session(p.a.base, used)

    # An enrollment code issued on a is redeemed on b, and only once, on either.
    assert on_a.post("/api/hosts", {"host_id": "newhost"}).status_code == 201
    issued = on_a.post("/api/hosts/newhost/enroll-code").json()["enroll_code"]
    body = {"host_id": "newhost", "code": issued}
    enrolled = httpx.post(f"{p.b.base}/api/agent/enroll", json=body, timeout=10)
    assert enrolled.status_code == 200, enrolled.text
    again = httpx.post(f"{p.a.base}/api/agent/enroll", json=body, timeout=10)
    assert again.status_code == 401
    first = enrolled.json()["agent_token"]
    _dial(p.b.port, "newhost", first)

    # The token rotated on a (no overlap): b refuses the old one and takes the new one.
    res = on_a.post("/api/hosts/newhost/agent-token", {"overlap_s": 0})
    assert res.status_code == 200, res.text
    second = res.json()["agent_token"]
    with pytest.raises(InvalidStatus) as refused:
        _dial(p.b.port, "newhost", first)
    assert refused.value.response.status_code == 401
    _dial(p.b.port, "newhost", second)
