"""Nothing but /health, /login and static files without a session; CSRF on every change;
agents need their own host's token."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus


@pytest.fixture(scope="module")
def idle(make_module_fleet):
    """One fleet for the module: a test that changes something (a token, a host) keeps
    the fleet as the next test expects it."""
    return make_module_fleet(hosts=2, agents=False)


def test_health_needs_no_login_and_tells_no_versions(idle):
    res = httpx.get(f"{idle.base}/health")
    assert res.status_code == 200
    assert res.json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/hosts"),
        ("POST", "/api/hosts"),
        ("GET", "/api/events"),
        ("POST", "/api/hosts/atlas/command"),
        ("GET", "/api/commands/x"),
        ("DELETE", "/api/hosts/atlas"),
        ("POST", "/api/hosts/atlas/agent-token"),
    ],
)
def test_the_api_refuses_requests_without_a_session(idle, method, path):
    res = httpx.request(method, f"{idle.base}{path}", json={"command": "switch"})
    assert res.status_code == 401
    assert res.json()["error"] == "unauthorized"


def test_the_page_redirects_to_login_without_a_session(idle):
    res = httpx.get(f"{idle.base}/")
    assert res.status_code == 303
    assert res.headers["location"] == "/login"


def test_a_wrong_password_gets_no_session(idle):
    res = httpx.post(f"{idle.base}/login", data={"username": "admin", "password": "wrong"})
    assert res.status_code == 401
    assert "nixfleet_session" not in res.cookies
    res = httpx.post(
        f"{idle.base}/login", data={"username": "root", "password": idle.fleet.password}
    )
    assert res.status_code == 401


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_state_changes_without_the_csrf_token_are_refused(idle, token):
    api = idle.api()
    headers = {} if token is None else {"X-CSRF-Token": token}
    for path, body in [
        ("/api/hosts/atlas/command", {"command": "switch"}),
        ("/api/hosts", {"host_id": "evil"}),
        ("/api/hosts/atlas/agent-token", None),
    ]:
        res = api.http.post(path, json=body, headers=headers)
        assert res.status_code == 403, path
        assert res.json()["error"] == "forbidden"
    res = api.http.delete("/api/hosts/atlas", headers=headers)
    assert res.status_code == 403
    assert [h["id"] for h in api.get("/api/hosts").json()["hosts"]] == ["atlas", "borealis"]


def test_a_cross_origin_request_is_refused_even_with_the_token(idle):
    api = idle.api()
    res = api.post(
        "/api/hosts/atlas/command",
        {"command": "switch"},
        headers={"Origin": "https://evil.example"},
    )
    assert res.status_code == 403


def test_logout_deletes_the_session(idle):
    api = idle.api()
    res = api.http.post("/logout", data={"csrf_token": api.csrf})
    assert res.status_code == 303
    api.http.cookies.clear()
    assert api.get("/api/hosts").status_code == 401


def test_the_database_holds_no_agent_token_in_clear(idle):
    api = idle.api()
    code = api.post("/api/hosts", {"host_id": "fresh"}).json()["enroll_code"]
    token = api.post("/api/hosts/fresh/agent-token").json()["agent_token"]
    raw = (idle.fleet.root / "dashboard" / "nixfleet.db").read_bytes()
    assert token.encode() not in raw
    assert code.encode() not in raw
    for host in idle.fleet.hosts:
        assert host.token_file.read_text().encode() not in raw


async def _connect(base: str, host_id: str, token: str):
    url = base.replace("http://", "ws://") + "/api/agent/ws"
    headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": host_id}
    return await websockets.connect(url, additional_headers=headers, open_timeout=5)


@pytest.mark.parametrize("case", ["wrong", "other_host", "unknown_host", "empty"])
def test_an_agent_without_its_own_hosts_token_is_refused(idle, case):
    atlas = idle.host("atlas").token_file.read_text()
    host_id, token = {
        "wrong": ("atlas", "nfa_not-a-real-token"),
        "other_host": ("borealis", atlas),
        "unknown_host": ("ghost", atlas),
        "empty": ("atlas", ""),
    }[case]

    async def attempt() -> None:
        with pytest.raises(InvalidStatus) as err:
            await _connect(idle.base, host_id, token)
        assert err.value.response.status_code == 401

    asyncio.run(attempt())


def test_a_rotated_token_stops_working_at_once(idle):
    api = idle.api()
    old = idle.host("atlas").token_file.read_text()
    new = api.post("/api/hosts/atlas/agent-token").json()["agent_token"]
    assert new != old
    idle.host("atlas").token_file.write_text(new)  # what the agent is given on rotation

    async def attempt() -> None:
        with pytest.raises(InvalidStatus):
            await _connect(idle.base, "atlas", old)
        ws = await _connect(idle.base, "atlas", new)
        await ws.close()

    asyncio.run(attempt())


def test_an_agent_hello_for_another_host_is_refused(idle):
    atlas = idle.host("atlas").token_file.read_text()

    async def attempt() -> int:
        ws = await _connect(idle.base, "atlas", atlas)
        await ws.send(
            json.dumps(
                {
                    "type": "hello",
                    "protocol": 1,
                    "host_id": "borealis",
                    "agent_version": "x",
                    "status": {},
                }
            )
        )
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        return closed.value.rcvd.code

    assert asyncio.run(attempt()) == 4400
    with sqlite3.connect(idle.fleet.root / "dashboard" / "nixfleet.db") as conn:
        assert conn.execute("SELECT online FROM hosts WHERE id='borealis'").fetchone()[0] == 0


@pytest.mark.parametrize("cookie", ["nfs_forged-session-id", "", "x" * 500])
def test_a_forged_session_cookie_opens_nothing(idle, cookie):
    jar = httpx.Cookies()
    jar.set("nixfleet_session", cookie)
    with httpx.Client(base_url=idle.base, cookies=jar) as client:
        assert client.get("/api/hosts").status_code == 401
        assert client.get("/").status_code == 303
        res = client.post(
            "/api/hosts/atlas/command",
            json={"command": "switch"},
            headers={"X-CSRF-Token": "anything"},
        )
        assert res.status_code == 401
