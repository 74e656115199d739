"""The host-id rule, checked against the running API with generated input (hypothesis):
the API accepts exactly what the one rule in core/hostid.py accepts, and nothing is a 500."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixfleet.core.errors import InvalidHostId, for_people
from nixfleet.core.hostid import canonical_host_id, is_host_id

# Near-misses of valid ids: look-alike letters (Cyrillic а/е/о, dotless ı, fullwidth ａ),
# separators, traversal pieces, case and whitespace.
NEAR = "abcxyz019-" + "ABZ_./\\ \t\n%;:" + "аеоıａ\u200b\u00a0"
host_ids = st.one_of(
    st.text(alphabet=NEAR, max_size=70),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["..", "../etc", "a" * 63, "a" * 64, "", " ", "-a", "a-", "xn--80ak6aa92e"]),
    st.text(max_size=80),
)
CHECKS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _rule(raw: str) -> str | None:
    try:
        return canonical_host_id(raw)
    except InvalidHostId:
        return None


@pytest.fixture
def api(make_fleet):
    # Hundreds of requests a second from one address: the per-address API limit would
    # answer 429, which is not what this test is about.
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_RATE_LIMIT_API": "off"})
    return rf.api()


@CHECKS
@given(raw=host_ids)
def test_adding_a_host_follows_the_one_rule(api, raw):
    res = api.post("/api/hosts", {"host_id": raw})
    expected = _rule(raw)
    if expected is None:
        assert res.status_code == 422, (raw, res.text)
        assert res.json() == {"error": "invalid_host_id", "detail": _message(raw)}
    else:
        assert res.status_code in (201, 409), (raw, res.text)
        if res.status_code == 201:
            assert res.json()["host"]["id"] == expected
    assert all(is_host_id(h["id"]) for h in api.get("/api/hosts").json()["hosts"])


@CHECKS
@given(raw=host_ids)
def test_a_host_id_in_the_path_is_checked_by_the_same_rule(api, raw):
    path = quote(raw, safe="")
    for res in (
        api.post(f"/api/hosts/{path}/command", {"command": "switch"}),
        api.http.delete(f"/api/hosts/{path}", headers={"X-CSRF-Token": api.csrf}),
        api.get(f"/api/hosts/{path}/commands"),
    ):
        assert res.status_code < 500, (raw, res.text)
        if _rule(raw) is None:
            assert res.status_code in (404, 405, 422), (raw, res.text)
        assert set(res.json()) >= {"error", "detail"} or res.status_code < 300


def _message(raw: str) -> str:
    try:
        canonical_host_id(raw)
    except InvalidHostId as exc:
        return for_people(str(exc))
    raise AssertionError("valid")
