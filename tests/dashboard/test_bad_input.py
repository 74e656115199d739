"""Bad input gets a clear 4xx JSON error and writes nothing; never a 500."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def _command_rows(rf) -> int:
    db = rf.fleet.root / "dashboard" / "nixfleet.db"
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM commands").fetchone()[0])


@pytest.fixture(scope="module")
def idle(make_module_fleet):
    """One fleet for the module: each request here is refused and leaves nothing behind."""
    return make_module_fleet(hosts=1, agents=False)


@pytest.fixture(scope="module")
def api(idle):
    return idle.api()


@pytest.fixture
def fresh(make_fleet):
    """A fleet of its own for generated input, some of which is valid and adds hosts."""
    return make_fleet(hosts=1, agents=False)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/hosts/atlas/command", {"command": "rm -rf /"}, 422, "unknown_command"),
        ("/api/hosts/atlas/command", {"command": "reboot"}, 422, "unknown_command"),
        ("/api/hosts/ghost/command", {"command": "switch"}, 404, "not_found"),
        ("/api/hosts/a;b/command", {"command": "switch"}, 422, "invalid_host_id"),
        ("/api/hosts/atlas/command", {}, 422, "invalid"),
        ("/api/hosts/atlas/command", {"command": "switch", "x": 1}, 422, "invalid"),
        ("/api/hosts/atlas/command", {"command": ["switch"]}, 422, "invalid"),
        ("/api/commands/bulk", {"command": "switch", "host_ids": []}, 422, "invalid"),
    ],
)
def test_a_bad_command_request_is_refused_clearly_and_stores_nothing(
    idle, api, path, body, status, code
):
    res = api.post(path, body)
    assert res.status_code == status, res.text
    assert res.json()["error"] == code
    assert res.json()["detail"]
    assert _command_rows(idle) == 0


def test_the_unknown_command_error_lists_what_is_accepted(api):
    detail = api.post("/api/hosts/atlas/command", {"command": "reboot"}).json()["detail"]
    for kind in ("pull", "switch", "pull-switch", "test", "stop", "restart"):
        assert kind in detail


def test_malformed_json_is_a_400(idle, api):
    res = api.http.post(
        "/api/hosts/atlas/command",
        content=b'{"command": "sw',
        headers={"X-CSRF-Token": api.csrf, "Content-Type": "application/json"},
    )
    assert res.status_code == 400
    assert res.json() == {"error": "malformed_json", "detail": "request body is not valid JSON"}
    assert _command_rows(idle) == 0


def test_an_oversized_body_is_a_413(api):
    res = api.post("/api/hosts", {"host_id": "big", "location": "x" * 200_000})
    assert res.status_code == 413
    assert res.json()["error"] == "too_large"
    assert all(h["id"] != "big" for h in api.get("/api/hosts").json()["hosts"])


def test_an_oversized_body_without_content_length_is_a_413(api):

    def chunks():
        for _ in range(100):
            yield b"x" * 10_000

    res = api.http.post(
        "/api/hosts",
        content=chunks(),
        headers={"X-CSRF-Token": api.csrf, "Content-Type": "application/json"},
    )
    assert res.status_code == 413


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"host_id": "-bad-"}, 422, "invalid_host_id"),
        ({"host_id": "a" * 64}, 422, "invalid_host_id"),
        ({"host_id": ""}, 422, "invalid_host_id"),
        ({"host_id": "a" * 300}, 422, "invalid"),
        ({"host_id": "under_score"}, 422, "invalid_host_id"),
        ({"host_id": "ok", "theme_color": "red;}"}, 422, "invalid"),
        ({"host_id": "atlas"}, 409, "conflict"),
        ({"host_id": "ATLAS"}, 409, "conflict"),
    ],
)
def test_adding_a_bad_or_duplicate_host_is_refused(api, body, status, code):
    res = api.post("/api/hosts", body)
    assert res.status_code == status, res.text
    assert res.json()["error"] == code
    assert [h["id"] for h in api.get("/api/hosts").json()["hosts"]] == ["atlas"]


def test_hosts_are_added_and_removed_with_canonical_ids(api):
    res = api.post("/api/hosts", {"host_id": " Web-01 ", "location": "rack C"})
    assert res.status_code == 201
    assert res.json()["host"]["id"] == "web-01"
    assert res.json()["enroll_code"].startswith("nfe_")
    assert (
        api.http.delete("/api/hosts/WEB-01", headers={"X-CSRF-Token": api.csrf}).status_code == 200
    )
    assert (
        api.http.delete("/api/hosts/web-01", headers={"X-CSRF-Token": api.csrf}).status_code == 404
    )


def test_unknown_command_ids_and_routes_are_404_json(api):
    assert api.get("/api/commands/nope").status_code == 404
    res = api.get("/api/nothing-here")
    assert res.status_code == 404
    assert res.json()["error"] == "not_found"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"command": json_values, "host_ids": json_values, "host_id": json_values},
        optional={"location": json_values, "theme_color": json_values, "x": json_values},
    ),
)


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, raw=st.binary(max_size=60))
def test_generated_garbage_is_always_a_clear_4xx(fresh, body, raw):
    """Whatever JSON (or non-JSON) arrives, the answer is a 4xx JSON error or a success —
    never a 500 (the fixture's teardown also fails the test on any logged 500)."""
    api = getattr(fresh, "fuzz_api", None) or fresh.api()  # one login for all examples
    fresh.fuzz_api = api
    for path in ("/api/hosts", "/api/hosts/atlas/command", "/api/commands/bulk"):
        res = api.post(path, body)
        assert res.status_code < 500, (path, body, res.text)
        if res.status_code >= 400:
            assert set(res.json()) == {"error", "detail"}, res.text
        res = api.http.post(
            path,
            content=raw,
            headers={"X-CSRF-Token": api.csrf, "Content-Type": "application/json"},
        )
        assert res.status_code < 500, (path, raw, res.text)
    res = api.http.post("/login", content=raw, headers={"Content-Type": "multipart/form-data"})
    assert res.status_code < 500, (raw, res.text)
