"""Sessions: signed cookies backed by a database row; each attack on them is refused."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
import pytest

from conftest import Api, wait_for
from nixfleet.security.sessions import SessionSigner
from nixfleet.security.tokens import new_secret

COOKIE = "nixfleet_session"


@pytest.fixture(scope="module")
def shared(make_module_fleet):
    # Many logins in a few seconds: the per-address login limit is not what is tested here.
    return make_module_fleet(hosts=1, agents=False, env={"NIXFLEET_RATE_LIMIT_LOGIN": "600/minute"})


@pytest.fixture
def idle(shared):
    """The module's fleet with no session left by an earlier test (some count the rows)."""
    with _db(shared) as conn:
        conn.execute("DELETE FROM sessions")
    return shared


def _db(rf):
    return sqlite3.connect(rf.fleet.root / "dashboard" / "nixfleet.db")


def _with_cookie(rf, value: str) -> httpx.Client:
    jar = httpx.Cookies()
    jar.set(COOKIE, value)
    return httpx.Client(base_url=rf.base, cookies=jar, timeout=10)


def _opens_nothing(client: httpx.Client) -> None:
    assert client.get("/api/hosts").status_code == 401
    assert client.get("/").status_code == 303


def test_the_cookie_is_http_only_same_site_strict_and_signed(idle):
    api = idle.api()
    res = api.http.post("/login", data={"username": "admin", "password": idle.fleet.password})
    header = res.headers["set-cookie"]
    assert header.startswith(f"{COOKIE}=nfs_")
    assert "HttpOnly" in header
    assert "SameSite=strict" in header
    assert "Path=/" in header
    assert "Secure" not in header  # the plain-HTTP demo; see the HTTPS test below
    value = res.cookies[COOKIE]
    session_id, signature = value.rsplit(".", 1)
    assert signature
    with _db(idle) as conn:  # the database holds neither the cookie nor the id
        rows = conn.execute("SELECT id_hash FROM sessions").fetchall()
    assert all(session_id not in row[0] for row in rows)


def test_over_https_the_cookie_is_secure_and_host_prefixed(make_fleet):
    # Served over HTTPS by a TLS-terminating proxy on this machine, which says so.
    rf = make_fleet(
        hosts=1,
        agents=False,
        env={"NIXFLEET_SECURE_COOKIES": "true", "NIXFLEET_TRUSTED_PROXIES": "127.0.0.1"},
    )
    res = httpx.post(
        f"{rf.base}/login",
        data={"username": "admin", "password": rf.fleet.password},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"},
    )
    assert res.status_code == 303
    header = res.headers["set-cookie"]
    assert header.startswith("__Host-nixfleet_session=")
    assert "Secure" in header
    assert "Domain" not in header
    assert "Path=/" in header
    assert res.headers["strict-transport-security"].startswith("max-age=")
    # The plain-named cookie is not read at all when the dashboard is served over HTTPS.
    plain = res.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    with _with_cookie(rf, plain) as client:
        _opens_nothing(client)


@pytest.mark.parametrize("part", ["id", "signature"])
def test_a_tampered_cookie_opens_nothing(idle, part):
    api = idle.api()
    value = api.http.cookies[COOKIE]
    session_id, signature = value.rsplit(".", 1)
    flip = {"A": "B"}.get(signature[5], "A")
    tampered = {
        "id": f"{session_id[:-1]}{'x' if session_id[-1] != 'x' else 'y'}.{signature}",
        "signature": f"{session_id}.{signature[:5]}{flip}{signature[6:]}",
    }[part]
    with _with_cookie(idle, tampered) as client:
        _opens_nothing(client)
    assert api.get("/api/hosts").status_code == 200  # the real one still works


def test_a_cookie_forged_with_a_guessed_secret_opens_nothing(idle):
    api = idle.api()
    session_id = api.http.cookies[COOKIE].rsplit(".", 1)[0]
    forged = SessionSigner([new_secret()]).sign(session_id)
    with _with_cookie(idle, forged) as client:
        _opens_nothing(client)


def test_a_cookie_whose_row_is_gone_opens_nothing(idle):
    api = idle.api()
    with _db(idle) as conn:
        conn.execute("DELETE FROM sessions")
    assert api.get("/api/hosts").status_code == 401


@pytest.mark.parametrize("column", ["last_seen", "created_at"])
def test_an_idle_or_too_old_session_has_expired(idle, column):
    api = idle.api()
    with _db(idle) as conn:
        conn.execute(f"UPDATE sessions SET {column} = {column} - 30 * 86400")
    assert api.get("/api/hosts").status_code == 401
    with _db(idle) as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0


def test_rotating_secrets_keeps_sessions_and_removing_one_ends_them(make_fleet):
    idle = make_fleet(hosts=1, agents=False)  # its own: it restarts the dashboard
    secret_file = idle.fleet.root / "session-secret"
    old = secret_file.read_text().strip()
    api = idle.api()
    idle.kill_dashboard()
    secret_file.write_text(f"{new_secret()}\n{old}\n")  # a new first secret; old verifies
    idle.start_dashboard()
    assert api.get("/api/hosts").status_code == 200
    fresh = Api(idle.base, idle.fleet.password)  # signed with the new first secret
    idle.kill_dashboard()
    secret_file.write_text(secret_file.read_text().splitlines()[0] + "\n")  # old removed
    idle.start_dashboard()
    assert api.get("/api/hosts").status_code == 401
    assert fresh.get("/api/hosts").status_code == 200


def test_logging_in_always_issues_a_new_session_id(idle):
    """Session fixation: a cookie planted before login is never the one that gets in."""
    api = idle.api()
    planted = api.http.cookies[COOKIE]
    with _with_cookie(idle, planted) as victim:
        res = victim.post("/login", data={"username": "admin", "password": idle.fleet.password})
        assert res.status_code == 303
        assert res.cookies[COOKIE] != planted
        with _db(idle) as conn:
            assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 2
    with _with_cookie(idle, "nfs_attacker-chosen-id") as victim:
        res = victim.post("/login", data={"username": "admin", "password": idle.fleet.password})
        assert not res.cookies[COOKIE].startswith("nfs_attacker-chosen-id")


def test_logout_deletes_only_this_sessions_row(idle):
    mine, other = idle.api(), idle.api()
    cookie = mine.http.cookies[COOKIE]
    res = mine.http.post("/logout", data={"csrf_token": mine.csrf})
    assert res.status_code == 303
    assert 'nixfleet_session=""' in res.headers["set-cookie"]
    with _with_cookie(idle, cookie) as replay:
        _opens_nothing(replay)
    assert other.get("/api/hosts").status_code == 200


def test_log_out_everywhere_ends_every_session_and_closes_open_streams(idle):
    laptop, phone = idle.api(), idle.api()
    stream_end: dict[str, str] = {}

    def watch() -> None:
        with (
            httpx.Client(base_url=idle.base, cookies=phone.http.cookies, timeout=30) as client,
            client.stream("GET", "/api/events") as res,
        ):
            stream_end["status"] = str(res.status_code)
            for line in res.iter_lines():
                if line.startswith("event: session_ended"):
                    stream_end["event"] = line
                    return

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    wait_for(lambda: stream_end.get("status") == "200", 10, "the phone's event stream")
    time.sleep(0.2)  # the snapshot is sent; the stream is now waiting for events
    res = laptop.http.post("/logout-everywhere", data={"csrf_token": laptop.csrf})
    assert res.status_code == 303
    assert res.headers["location"] == "/login"
    reader.join(20)
    assert stream_end.get("event") == "event: session_ended"
    assert laptop.get("/api/hosts").status_code == 401
    assert phone.get("/api/hosts").status_code == 401
    with _db(idle) as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0


def test_log_out_everywhere_needs_the_csrf_token(idle):
    api = idle.api()
    res = api.http.post("/logout-everywhere", data={"csrf_token": "wrong"})
    assert res.status_code == 403
    assert res.json()["error"] == "forbidden"
    assert api.get("/api/hosts").status_code == 200
