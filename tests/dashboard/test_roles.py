"""Roles: every route declares one, every route answers each role as its line says."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from fastapi import FastAPI

from conftest import run_cli
from nixfleet.core.roles import Role
from nixfleet.dashboard import access
from nixfleet.dashboard.app import ROUTE_MODULES
from nixfleet.dashboard.routetable import RouteTable
from ssestream import sse_frames

PASSWORD = "a long enough password"
CAST = {"vera": "viewer", "otto": "operator", "ada": "admin"}


def _app_of(*tables: RouteTable) -> FastAPI:
    app = FastAPI()
    for table in tables:
        table.add_to(app.router)
    return app


def _keys() -> list[str]:
    return access.route_keys(_app_of(*(m.router for m in ROUTE_MODULES)).routes)


@pytest.fixture(scope="module")
def cast(make_module_fleet):
    rf = make_module_fleet(
        hosts=1,
        agents=False,
        env={"NIXFLEET_RATE_LIMIT_API": "1000/second", "NIXFLEET_RATE_LIMIT_LOGIN": "600/minute"},
    )
    for name, role in CAST.items():
        res = run_cli(["admin", "user", "add", name, "--role", role], rf.fleet.env, PASSWORD)
        assert res.returncode == 0, res.stderr
    return rf


@pytest.fixture
def team(cast):
    """The module's fleet with every user of the cast (and admin) enabled again.

    Some tests disable a user; the others expect all of them able to log in.
    """
    ada = Browser(cast.base, "ada")
    for name in [*CAST, "admin"]:
        assert ada.send("PATCH", f"/api/users/{name}", {"disabled": False}) == 200, name
    return cast


class Browser:
    def __init__(self, base: str, user: str, password: str = PASSWORD) -> None:
        self.http = httpx.Client(base_url=base, timeout=10, follow_redirects=False)
        res = self.http.post("/login", data={"username": user, "password": password})
        assert res.status_code == 303, res.text
        page = self.http.get("/").text
        self.csrf = page.split('name="csrf-token" content="')[1].split('"')[0]

    def send(self, method: str, path: str, json: object = None) -> int:
        headers = {"X-CSRF-Token": self.csrf, "Origin": str(self.http.base_url).rstrip("/")}
        with self.http.stream(method, path, json=json, headers=headers) as res:
            return res.status_code


def test_every_route_of_the_app_has_a_declared_role_and_no_line_is_stale():
    keys = _keys()
    assert len(keys) > 40
    assert set(keys) == set(access.NEEDS)


def test_an_app_with_a_route_without_a_declared_role_does_not_start():
    router = RouteTable()

    @router.post("/api/sneaky")
    async def sneaky() -> dict[str, str]:
        return {}

    app = _app_of(*(m.router for m in ROUTE_MODULES), router)
    with pytest.raises(RuntimeError, match="POST /api/sneaky"):
        access.check_routes(app.routes)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "nothing-here", path)


def test_every_route_answers_every_role_as_its_line_says(team):
    anonymous = httpx.Client(base_url=team.base, timeout=10, follow_redirects=False)
    keys = [k for k in _keys() if not k.startswith("WS ")]
    # Logging out last: it ends the session the other requests use.
    keys.sort(key=lambda k: "/logout" in k)
    names = {Role.parse(role): name for name, role in CAST.items()}
    browsers = {role: Browser(team.base, name) for role, name in names.items()}
    checked = 0
    for key in keys:
        need = access.NEEDS[key]
        if need.role is None:
            continue  # public, or its own credential: tested with that credential
        method, path = key.split(" ", 1)
        url = _concrete(path)
        with anonymous.stream(method, url, json={}) as res:
            assert res.status_code == (303 if need.page else 401), key
            if need.page:
                assert res.headers["location"] == "/login"
        for role in browsers:
            if "/logout" in key:  # the previous logout ended this role's session
                browsers[role] = Browser(team.base, names[role])
            status = browsers[role].send(method, url, {})
            if role < need.role:
                assert status == 403, f"{key} as {role.label}: {status}"
            else:
                assert status not in (401, 403, 500), f"{key} as {role.label}: {status}"
            checked += 1
    assert checked >= 3 * 30


def test_a_viewer_cannot_command_and_an_operator_cannot_manage_hosts_or_users(team):
    vera, otto = Browser(team.base, "vera"), Browser(team.base, "otto")
    assert vera.send("POST", "/api/hosts/atlas/command", {"command": "switch"}) == 403
    assert otto.send("POST", "/api/hosts", {"host_id": "evil"}) == 403
    assert otto.send("PATCH", "/api/users/otto", {"role": "admin"}) == 403
    assert otto.send("POST", "/api/hosts/atlas/command", {"command": "switch"}) == 202
    ada = Browser(team.base, "ada")
    audit = ada.http.get("/api/audit").json()["entries"]
    assert any(e["actor"] == "otto" and e["action"] == "command" for e in audit)
    events = ada.http.get("/api/security/summary").text
    assert "access_denied" in events


def test_disabling_a_user_ends_their_sessions_and_open_stream_at_once(team):
    vera, ada = Browser(team.base, "vera"), Browser(team.base, "ada")
    with vera.http.stream("GET", "/api/events", timeout=20) as stream:
        frames = sse_frames(stream.iter_lines())
        assert next(frames)["event"] == "snapshot"
        assert ada.send("PATCH", "/api/users/vera", {"disabled": True}) == 200
        started = time.monotonic()
        assert next(frames)["event"] == "session_ended"
        assert time.monotonic() - started < 10  # not the 15 s keep-alive re-check
    assert vera.http.get("/api/hosts").status_code == 401
    again = httpx.post(f"{team.base}/login", data={"username": "vera", "password": PASSWORD})
    assert again.status_code == 401
    entries = ada.http.get("/api/audit?action=user_change").json()["entries"]
    assert entries[0]["actor"] == "ada"
    assert entries[0]["detail"]["user"] == "vera"


def test_the_cli_disables_a_user_and_their_session_stops_working(team):
    otto = Browser(team.base, "otto")
    assert otto.http.get("/api/hosts").status_code == 200
    res = run_cli(["admin", "user", "disable", "otto"], team.fleet.env)
    assert res.returncode == 0, res.stderr
    assert otto.http.get("/api/hosts").status_code == 401
    listed = run_cli(["admin", "user", "list", "--json"], team.fleet.env).stdout
    assert '"username": "otto"' in listed and '"disabled": true' in listed
    assert "argon2" not in listed
    res = run_cli(["admin", "user", "set-role", "otto", "owner"], team.fleet.env)
    assert res.returncode == 2 and "viewer, operator or admin" in res.stderr


def test_the_last_enabled_admin_cannot_be_demoted_or_disabled(team):
    ada = Browser(team.base, "ada")
    assert ada.send("PATCH", "/api/users/admin", {"disabled": True}) == 200
    res = ada.http.patch(
        "/api/users/ada", json={"role": "viewer"}, headers={"X-CSRF-Token": ada.csrf}
    )
    assert res.status_code == 409, res.text
    assert "no enabled admin" in res.json()["detail"]
    assert ada.http.get("/api/users").status_code == 200


def test_a_weak_password_or_a_bad_name_is_refused_with_a_clear_message(team):
    ada = Browser(team.base, "ada")
    short = {"username": "neo", "password": "short", "role": "viewer"}
    res = ada.http.post("/api/users", json=short, headers={"X-CSRF-Token": ada.csrf})
    assert res.status_code == 422 and "12" in res.json()["detail"]
    bad = {"username": "bad name", "password": PASSWORD, "role": "viewer"}
    res = ada.http.post("/api/users", json=bad, headers={"X-CSRF-Token": ada.csrf})
    assert res.status_code == 422
    totp = {"username": "neo", "password": PASSWORD, "role": "viewer", "totp": True}
    res = ada.http.post("/api/users", json=totp, headers={"X-CSRF-Token": ada.csrf})
    assert res.status_code == 201 and res.headers["cache-control"] == "no-store"
    assert res.json()["totp_uri"].startswith("otpauth://")
    assert "totp_secret" not in ada.http.get("/api/users").text


def test_only_an_admin_sees_the_users_link_on_every_page(team):
    pages = ["/", "/rollouts", "/audit", "/security", "/hosts/atlas"]
    for name, sees in (("ada", True), ("otto", False), ("vera", False)):
        browser = Browser(team.base, name)
        for path in pages:
            html = browser.http.get(path).text
            assert ('href="/users"' in html) == sees, (name, path)


def test_only_an_operator_or_an_admin_gets_the_host_gate_form_and_may_save_it(team):
    gate = {"gate": {"deadline_s": 30}}
    for name, may in (("vera", False), ("otto", True), ("ada", True)):
        browser = Browser(team.base, name)
        html = browser.http.get("/hosts/atlas").text
        assert ('id="gate-form"' in html) == may, name
        assert browser.send("PUT", "/api/hosts/atlas/health-gate", gate) == (200 if may else 403)
