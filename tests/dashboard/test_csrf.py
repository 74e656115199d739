"""CSRF: every state-changing route wants this session's token and a same-origin request."""

from __future__ import annotations

import httpx
import pytest

from conftest import Api

# Every state-changing route of the dashboard, with a body it would accept.
CHANGES = [
    ("POST", "/api/hosts", {"host_id": "evil"}),
    ("DELETE", "/api/hosts/atlas", None),
    ("POST", "/api/hosts/atlas/command", {"command": "switch"}),
    ("POST", "/api/commands/bulk", {"command": "switch", "host_ids": ["atlas"]}),
    ("POST", "/api/hosts/atlas/agent-token", None),
    ("POST", "/api/commands/some-id/cancel", None),
    ("POST", "/logout", None),
    ("POST", "/logout-everywhere", None),
]


@pytest.fixture(scope="module")
def idle(make_module_fleet):
    """One fleet for the module: every change here is refused, or undone by its test."""
    # Refusals in quick succession from one address: the request limit is not tested here.
    return make_module_fleet(hosts=1, agents=False, env={"NIXFLEET_RATE_LIMIT_API": "1000/second"})


def _nothing_changed(api: Api) -> None:
    assert api.get("/api/hosts").status_code == 200, "the session must still be alive"
    assert [h["id"] for h in api.get("/api/hosts").json()["hosts"]] == ["atlas"]
    assert api.get("/api/hosts/atlas/commands").json()["commands"] == []


def _send(api: Api, method: str, path: str, body, headers: dict[str, str]):
    return api.http.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("token", ["missing", "wrong", "other_session"])
def test_a_change_without_this_sessions_token_is_a_403(idle, token):
    api = idle.api()
    other = idle.api()
    headers = {
        "missing": {},
        "wrong": {"X-CSRF-Token": "wrong-token"},
        "other_session": {"X-CSRF-Token": other.csrf},
    }[token]
    for method, path, body in CHANGES:
        res = _send(api, method, path, body, headers)
        assert res.status_code == 403, f"{method} {path}: {res.text}"
        assert res.json()["error"] == "forbidden"
        assert "csrf" in res.json()["detail"].lower()
        _nothing_changed(api)


@pytest.mark.parametrize(
    "header",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/page"},
        {"Referer": "http://127.0.0.1.evil.example/"},
    ],
)
def test_a_cross_origin_change_is_a_403_even_with_the_token(idle, header):
    api = idle.api()
    for method, path, body in CHANGES:
        res = _send(api, method, path, body, {"X-CSRF-Token": api.csrf, **header})
        assert res.status_code == 403, f"{method} {path}: {res.text}"
        assert res.json()["error"] == "forbidden"
        assert "another origin" in res.json()["detail"]
        _nothing_changed(api)


def test_a_same_origin_referer_with_the_token_is_accepted(idle):
    api = idle.api()
    res = api.post(
        "/api/hosts", {"host_id": "web-01"}, headers={"Referer": f"{idle.base}/some/page"}
    )
    assert res.status_code == 201, res.text
    removed = api.http.delete("/api/hosts/web-01", headers={"X-CSRF-Token": api.csrf})
    assert removed.status_code == 200  # the fleet is the next test's too


def test_a_form_post_carries_the_token_in_a_field(idle):
    api = idle.api()
    refused = api.http.post("/logout", data={"csrf_token": "wrong"})
    assert refused.status_code == 403
    accepted = api.http.post(
        "/logout", data={"csrf_token": api.csrf}, headers={"Origin": idle.base}
    )
    assert accepted.status_code == 303


def test_a_cross_site_form_post_to_login_cannot_plant_a_session(idle):
    """Login CSRF: a login form on another site would log the victim into its account."""
    answer = httpx.post(
        f"{idle.base}/login",
        data={"username": "admin", "password": idle.fleet.password},
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"
