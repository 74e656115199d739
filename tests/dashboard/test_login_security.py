"""Login: TOTP codes work once, failures never say which factor failed, guessing is slowed."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pyotp
import pytest

from conftest import wait_for

TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
WRONG = "Wrong user name, password or code."


# TOTP replay and login throttling depend on stored state: both engines.
pytestmark = pytest.mark.usefixtures("backend")


def _client(rf, source: str = "127.0.0.1") -> httpx.Client:
    """Return a client whose connections come from source (any 127.x address is loopback)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=rf.base, transport=transport, timeout=10)


def _login(client: httpx.Client, password: str, code: str | None = None, user: str = "admin"):
    data = {"username": user, "password": password}
    if code is not None:
        data["code"] = code
    return client.post("/login", data=data)


def _error(res: httpx.Response) -> str:
    match = re.search(r'<p class="error" role="alert">([^<]*)</p>', res.text)
    return match.group(1) if match else ""


@pytest.fixture
def with_totp(make_fleet):
    return make_fleet(
        hosts=1,
        agents=False,
        env={"NIXFLEET_TOTP_SECRET": TOTP_SECRET, "NIXFLEET_REQUIRE_TOTP": "true"},
    )


def test_the_login_form_asks_for_a_code_when_totp_is_on(with_totp):
    page = httpx.get(f"{with_totp.base}/login").text
    assert 'name="code"' in page
    assert 'autocomplete="one-time-code"' in page


def test_the_right_password_and_code_log_in(with_totp):
    with _client(with_totp) as client:
        res = _login(client, with_totp.fleet.password, pyotp.TOTP(TOTP_SECRET).now())
        assert res.status_code == 303, res.text
        assert client.get("/api/hosts").status_code == 200


@pytest.mark.parametrize("code", [None, "", "000000x", "12345"])
def test_a_missing_or_malformed_code_is_refused(with_totp, code):
    with _client(with_totp) as client:
        res = _login(client, with_totp.fleet.password, code)
        assert res.status_code == 401
        assert _error(res) == WRONG
        assert "nixfleet_session" not in res.cookies


def test_a_wrong_code_is_refused_like_a_wrong_password(with_totp):
    totp = pyotp.TOTP(TOTP_SECRET)
    valid_now = {totp.at(time.time() + 30 * offset) for offset in (-2, -1, 0, 1, 2)}
    wrong_code = next(c for c in ("000000", "111111", "222222") if c not in valid_now)
    with _client(with_totp) as client:
        bad_code = _login(client, with_totp.fleet.password, wrong_code)
        bad_password = _login(client, with_totp.fleet.password + "x", totp.now())
    assert bad_code.status_code == bad_password.status_code == 401
    assert _error(bad_code) == _error(bad_password) == WRONG
    assert "nixfleet_session" not in bad_code.cookies


def test_a_code_works_only_once(with_totp):
    code = pyotp.TOTP(TOTP_SECRET).now()
    with _client(with_totp) as first:
        assert _login(first, with_totp.fleet.password, code).status_code == 303
    with _client(with_totp) as replay:
        res = _login(replay, with_totp.fleet.password, code)
        assert res.status_code == 401
        assert _error(res) == WRONG
        assert replay.get("/api/hosts").status_code == 401


def test_a_wrong_password_does_not_use_up_the_code(with_totp):
    code = pyotp.TOTP(TOTP_SECRET).now()
    with _client(with_totp) as client:
        assert _login(client, "wrong-password", code).status_code == 401
        assert _login(client, with_totp.fleet.password, code).status_code == 303


@pytest.fixture
def strict(make_fleet):
    return make_fleet(
        hosts=1,
        agents=False,
        env={"NIXFLEET_LOGIN_FREE_FAILURES": "3", "NIXFLEET_LOGIN_BASE_DELAY_S": "600"},
    )


def test_guessing_one_accounts_password_hits_the_limit_from_any_address(strict):
    with _client(strict, "127.0.0.2") as attacker:
        for _ in range(3):
            assert _login(attacker, "guess").status_code == 401
        blocked = _login(attacker, strict.fleet.password)
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 500
    assert "Too many failed attempts" in _error(blocked)
    assert "nixfleet_session" not in blocked.cookies
    # The account is throttled, not just the address: a second address is refused too.
    with _client(strict, "127.0.0.3") as elsewhere:
        assert _login(elsewhere, strict.fleet.password).status_code == 429


def test_guessing_many_accounts_from_one_address_hits_the_limit(strict):
    with _client(strict, "127.0.0.4") as attacker:
        for user in ("root", "ops", "alice"):
            assert _login(attacker, "guess", user=user).status_code == 401
        assert _login(attacker, strict.fleet.password).status_code == 429
    # The admin account itself was never guessed at: from another address it logs in.
    with _client(strict, "127.0.0.5") as admin:
        assert _login(admin, strict.fleet.password).status_code == 303


def test_a_good_login_clears_earlier_failures(strict):
    with _client(strict, "127.0.0.6") as client:
        for _ in range(2):
            assert _login(client, "typo").status_code == 401
        assert _login(client, strict.fleet.password).status_code == 303
        for _ in range(2):
            assert _login(client, "typo").status_code == 401
        assert _login(client, strict.fleet.password).status_code == 303


def test_a_guessing_run_elsewhere_does_not_keep_the_admin_out(strict):
    """OWASP: throttle the attacker. While guesses from other addresses lock the account
    for unknown browsers, the admin's browser (device cookie) and address still log in."""
    with _client(strict, "127.0.0.20") as admin:
        assert _login(admin, strict.fleet.password).status_code == 303
        stop = threading.Event()
        tried: list[int] = []

        def attack() -> None:
            for i in range(40):
                if stop.is_set():
                    return
                with _client(strict, f"127.0.1.{i % 8 + 1}") as attacker:
                    tried.append(_login(attacker, f"guess{i}").status_code)

        thread = threading.Thread(target=attack)
        thread.start()
        try:
            wait_for(lambda: tried.count(429) >= 3, 60, "the attack to be throttled")
            res = _login(admin, strict.fleet.password)
            assert res.status_code == 303, _error(res)
            assert admin.get("/api/hosts").status_code == 200
        finally:
            stop.set()
            thread.join(60)
    assert 401 in tried and 429 in tried  # the guesses were refused, then throttled
    # The same browser without its device cookie, from the same address: still known.
    with _client(strict, "127.0.0.20") as same_address:
        assert _login(same_address, strict.fleet.password).status_code == 303
    # Anyone new — even with the right password — waits while the account is attacked.
    with _client(strict, "127.0.0.21") as stranger:
        assert _login(stranger, strict.fleet.password).status_code == 429
