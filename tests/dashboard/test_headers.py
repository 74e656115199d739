"""Every response — page, static file, API answer and API error — carries the same
security headers, with a fresh CSP nonce each time; a crash is a generic 500 with an id."""

from __future__ import annotations

import re
import sqlite3

import httpx
import pytest


@pytest.fixture
def idle(make_fleet):
    return make_fleet(hosts=1, agents=False)


def _csp(res: httpx.Response) -> dict[str, str]:
    policy = res.headers["content-security-policy"]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in (p.strip() for p in policy.split(";"))}


def assert_secure_headers(res: httpx.Response) -> None:
    csp = _csp(res)
    assert csp["default-src"] == "'self'"
    assert re.fullmatch(r"'nonce-[A-Za-z0-9_-]{20,}'", csp["script-src"])
    assert csp["style-src"] == f"'self' {csp['script-src']}"
    for directive, value in {
        "object-src": "'none'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
        "form-action": "'self'",
    }.items():
        assert csp[directive] == value, directive
    assert "unsafe-inline" not in res.headers["content-security-policy"]
    assert "unsafe-eval" not in res.headers["content-security-policy"]
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["referrer-policy"] == "same-origin"
    assert res.headers["cross-origin-opener-policy"] == "same-origin"
    assert "camera=()" in res.headers["permissions-policy"]
    assert res.headers["x-frame-options"] == "DENY"
    assert re.fullmatch(r"[0-9a-f]{16}", res.headers["x-request-id"])


def test_every_page_and_api_answer_carries_the_headers(idle):
    api = idle.api()
    answers = {
        "dashboard": api.get("/"),
        "login": httpx.get(f"{idle.base}/login"),
        "wrong login": httpx.post(f"{idle.base}/login", data={"username": "a", "password": "b"}),
        "health": httpx.get(f"{idle.base}/health"),
        "static": httpx.get(f"{idle.base}/static/app.js"),
        "api": api.get("/api/hosts"),
        "401": httpx.get(f"{idle.base}/api/hosts"),
        "403": api.http.post("/api/hosts", json={"host_id": "x"}),
        "404": api.get("/api/nothing"),
        "405": api.http.put("/api/hosts"),
        "409": api.post("/api/hosts", {"host_id": "atlas"}),
        "422": api.post("/api/hosts", {"host_id": "Bad_Id"}),
        "400": api.http.post(
            "/api/hosts",
            content=b"{",
            headers={"X-CSRF-Token": api.csrf, "Content-Type": "application/json"},
        ),
        "413": api.post("/api/hosts", {"host_id": "big", "location": "x" * 100_000}),
    }
    for name, res in answers.items():
        try:
            assert_secure_headers(res)
        except (AssertionError, KeyError) as exc:
            raise AssertionError(f"{name} ({res.status_code}): {exc!r}") from exc
    assert "strict-transport-security" not in answers["login"].headers  # plain-HTTP demo


def test_each_response_gets_a_fresh_nonce_and_the_page_uses_it(idle):
    first, second = httpx.get(f"{idle.base}/login"), httpx.get(f"{idle.base}/login")
    assert _csp(first)["script-src"] != _csp(second)["script-src"]
    api = idle.api()
    page = api.get("/")
    nonce = _csp(page)["script-src"].removeprefix("'nonce-").removesuffix("'")
    assert f'nonce="{nonce}"' in page.text
    # No inline handlers or inline styles anywhere the CSP would have to allow them.
    for res in (page, first):
        assert not re.search(r"\son[a-z]+=", res.text)
        assert " style=" not in res.text
        assert "javascript:" not in res.text


def test_a_crash_is_a_generic_500_with_a_request_id_that_is_in_the_log(idle):
    idle.expect_internal_errors = True
    api = idle.api()
    with sqlite3.connect(idle.fleet.root / "dashboard" / "nixfleet.db") as conn:
        conn.execute("DROP TABLE sessions")  # every request with a cookie now fails deep down
    res = api.get("/api/hosts")
    assert res.status_code == 500
    body = res.json()
    assert body["error"] == "internal"
    request_id = body["request_id"]
    assert request_id == res.headers["x-request-id"]
    assert request_id in body["detail"]
    assert "Traceback" not in res.text
    assert "sessions" not in res.text  # nothing about the database leaks
    assert_secure_headers(res)
    log = (idle.fleet.root / "dashboard.log").read_text()
    assert f"request id {request_id}" in log
    assert "no such table: sessions" in log
