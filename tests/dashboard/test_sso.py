"""Single sign-on against a real OpenID Connect provider (oidc-provider on Node).

One provider and one dashboard serve the module. The provider's accounts and groups are
in tests/sso/provider/provider.mjs; some of its accounts get an ID token rewritten on
the way out of its token endpoint (edited after signing, signed with a key it never
published, issued to another client, expired, with another nonce), so each refusal is
tried through the real token endpoint and checked against the real JWKS.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import oidcprovider
from conftest import Api, RunningFleet, wait_for
from nixfleet.config import load_settings
from nixfleet.core.errors import ConfigError
from nixfleet.demo.run import DemoFleet

provider, fleet = oidcprovider.provider, oidcprovider.sso_fleet


@pytest.fixture(scope="module")
def admin(fleet: RunningFleet) -> Api:
    return fleet.api()


@pytest.fixture
def browser_like(fleet: RunningFleet) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        yield client


def signed_in_as(client: httpx.Client, rf: RunningFleet) -> str | None:
    """Return the user the client's session belongs to (from the page), or None."""
    page = client.get(f"{rf.base}/")
    if page.status_code != 200:
        return None
    return page.text.split('<span class="user">')[1].split("<")[0]


def users(api: Api) -> dict[str, dict[str, Any]]:
    return {u["username"]: u for u in api.get("/api/users").json()["users"]}


def audit(api: Api, actor: str = "") -> list[dict[str, Any]]:
    entries = api.get(f"/api/audit?action=login&actor={actor}").json()["entries"]
    return list(entries)


def refused(api: Api, factor: str) -> dict[str, Any]:
    """Return the audit entry of the newest refused login for factor (waits for it)."""

    def found() -> dict[str, Any] | None:
        for e in audit(api):
            if e["result"] == "refused" and (e.get("detail") or {}).get("factor") == factor:
                return e
        return None

    return dict(wait_for(found, 10, f"a refused login audited with {factor}"))


@pytest.mark.parametrize(
    ("login", "role"), [("alice", "admin"), ("olivia", "operator"), ("victor", "viewer")]
)
def test_a_provider_user_signs_in_with_the_role_their_groups_map_to(
    fleet, browser_like, login, role, admin
):
    callback = oidcprovider.sign_in(browser_like, fleet.base, login)
    res = browser_like.get(callback)
    assert res.status_code == 303 and res.headers["location"] == "/"
    assert signed_in_as(browser_like, fleet) == login
    row = users(admin)[login]
    assert (row["role"], row["source"], row["disabled"]) == (role, "oidc", False)
    entry = audit(admin, login)[0]
    assert entry["result"] == "ok" and entry["detail"] == {"via": "oidc", "role": role}


def test_groups_missing_from_the_id_token_are_read_from_userinfo(fleet, browser_like, admin):
    res = browser_like.get(oidcprovider.sign_in(browser_like, fleet.base, "quiet"))
    assert res.status_code == 303
    assert signed_in_as(browser_like, fleet) == "quiet"
    assert users(admin)["quiet"]["role"] == "operator"  # "ops", as the userinfo says


def test_a_signed_in_provider_user_has_exactly_their_role(fleet, browser_like, admin):
    browser_like.get(oidcprovider.sign_in(browser_like, fleet.base, "olivia"))
    assert browser_like.get(f"{fleet.base}/api/hosts").status_code == 200
    assert browser_like.get(f"{fleet.base}/api/users").status_code == 403  # admin only


@pytest.mark.parametrize(
    ("login", "factor", "says"),
    [
        ("tamper-claims", "oidc_signature", "signature does not verify"),
        ("foreign-key", "oidc_signature", "signature does not verify"),
        ("other-audience", "oidc_audience", "issued to another client"),
        ("expired", "oidc_expired", "has expired"),
        ("wrong-nonce", "oidc_nonce", "belongs to another sign-in"),
    ],
)
def test_an_id_token_that_does_not_verify_is_refused(
    fleet, admin, browser_like, login, factor, says
):
    res = browser_like.get(oidcprovider.sign_in(browser_like, fleet.base, login))
    assert res.status_code == 401
    assert says in res.text
    assert signed_in_as(browser_like, fleet) is None
    assert login not in users(admin)
    assert refused(admin, factor)["address"] == "127.0.0.1"


def test_a_replayed_state_is_refused(fleet, admin, browser_like):
    callback = oidcprovider.sign_in(browser_like, fleet.base, "victor")
    state_cookie = dict(browser_like.cookies)["nixfleet_oidc"]
    assert browser_like.get(callback).status_code == 303
    with httpx.Client(timeout=10) as replay:  # the whole answer again, cookie and all
        replay.cookies.set("nixfleet_oidc", state_cookie)
        res = replay.get(callback)
        assert res.status_code == 401 and "used already" in res.text
        assert signed_in_as(replay, fleet) is None
    refused(admin, "oidc_state")


def test_a_state_is_good_only_in_the_browser_that_began_the_sign_in(fleet, browser_like):
    callback = oidcprovider.sign_in(browser_like, fleet.base, "alice")
    with httpx.Client(timeout=10) as attacker_victim:  # login CSRF: no state cookie here
        res = attacker_victim.get(callback)
        assert res.status_code == 401
        assert signed_in_as(attacker_victim, fleet) is None
    # And it is gone for the right browser too: a state is tried once.
    assert browser_like.get(callback).status_code == 401


def test_a_state_the_dashboard_never_made_is_refused(fleet, admin, browser_like):
    res = browser_like.get(f"{fleet.base}/login/oidc/callback?state=made-up&code=abc")
    assert res.status_code == 401 and "please start again" in res.text


def test_a_user_whose_groups_map_to_no_role_is_refused_and_gets_no_user(fleet, browser_like, admin):
    res = browser_like.get(oidcprovider.sign_in(browser_like, fleet.base, "una"))
    assert res.status_code == 403 and "has no NixFleet role" in res.text
    assert signed_in_as(browser_like, fleet) is None
    assert "una" not in users(admin)
    assert refused(admin, "oidc_unmapped")["actor"] == "una"


def test_a_disabled_provider_user_is_refused(fleet, admin, browser_like):
    browser_like.get(oidcprovider.sign_in(browser_like, fleet.base, "dora"))
    assert signed_in_as(browser_like, fleet) == "dora"
    assert admin.http.patch(
        "/api/users/dora", json={"disabled": True}, headers={"X-CSRF-Token": admin.csrf}
    ).is_success
    assert signed_in_as(browser_like, fleet) is None  # her session ended at once
    with httpx.Client(timeout=10) as again:
        res = again.get(oidcprovider.sign_in(again, fleet.base, "dora"))
        assert res.status_code == 403 and "is disabled" in res.text
        assert signed_in_as(again, fleet) is None
    assert refused(admin, "oidc_disabled")["actor"] == "dora"


def test_a_provider_account_cannot_take_a_local_users_name(fleet, browser_like, admin):
    res = browser_like.get(oidcprovider.sign_in(browser_like, fleet.base, "admin"))
    assert res.status_code == 403 and "is a local user here" in res.text
    assert signed_in_as(browser_like, fleet) is None
    assert users(admin)["admin"]["source"] == "local"


def test_a_provider_user_has_no_password_to_log_in_with(fleet, browser_like):
    browser_like.get(oidcprovider.sign_in(browser_like, fleet.base, "alice"))
    with httpx.Client(base_url=fleet.base, timeout=10) as other:
        for password in ("", "x" * 12):
            res = other.post("/login", data={"username": "alice", "password": password})
            assert res.status_code in (401, 422)
            assert signed_in_as(other, fleet) is None


def test_the_login_page_offers_the_provider_next_to_the_password_form(fleet):
    page = httpx.get(f"{fleet.base}/login", timeout=10).text
    assert 'href="/login/oidc"' in page and "Sign in with Test ID" in page
    assert 'name="password"' in page


def test_no_code_state_or_token_reaches_the_dashboards_log(fleet, browser_like):
    callback = oidcprovider.sign_in(browser_like, fleet.base, "victor")
    query = dict(httpx.URL(callback).params)
    browser_like.get(callback)
    log = (fleet.fleet.root / "dashboard.log").read_text(errors="replace")
    assert "/login/oidc/callback" in log  # the access log saw the request
    assert query["code"] not in log and query["state"] not in log


def test_with_password_login_off_the_password_form_is_refused(fleet, tmp_path):
    # A second dashboard on the module fleet's repository and secrets, its own database.
    env = {
        **fleet.fleet.env,
        "NIXFLEET_DATA_DIR": str(tmp_path / "data"),
        "NIXFLEET_PASSWORD_LOGIN": "false",
    }
    off = RunningFleet(
        DemoFleet(tmp_path, fleet.fleet.repo_url, env, fleet.fleet.password), uuid.uuid4().hex, 1
    )
    off.start_dashboard()
    try:
        page = httpx.get(f"{off.base}/login", timeout=10).text
        assert "Sign in with Test ID" in page and 'name="password"' not in page
        res = httpx.post(
            f"{off.base}/login",
            data={"username": "admin", "password": fleet.fleet.password},
            timeout=10,
        )
        assert res.status_code == 403 and "Password login is turned off" in res.text
        assert "nixfleet_session" not in res.headers.get("set-cookie", "")
    finally:
        off.stop()


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"NIXFLEET_PASSWORD_LOGIN": "false"}, "needs single sign-on"),
        ({"NIXFLEET_OIDC_ISSUER": "http://idp.example.com"}, "https"),
        ({"NIXFLEET_OIDC_ISSUER": "https://idp.example.com"}, "CLIENT_ID"),
        (
            {"NIXFLEET_OIDC_ISSUER": "https://idp.example.com", "NIXFLEET_OIDC_CLIENT_ID": "x"},
            "NIXFLEET_OIDC_ROLES",
        ),
        ({"NIXFLEET_OIDC_ROLES": "admins=root"}, "Unknown role"),
        ({"NIXFLEET_OIDC_ROLES": "admins"}, "GROUP=ROLE"),
    ],
)
def test_single_sign_on_settings_that_cannot_work_stop_start_up(monkeypatch, env, says):
    monkeypatch.setenv("NIXFLEET_DEMO", "true")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=says):
        load_settings()
