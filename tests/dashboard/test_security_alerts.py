"""Alerts reach a real webhook (Apprise json://) on loopback: one per incident, a
"resolved" when it ends, silence inside the cooldown, and a dead channel slows no login."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import run_cli, wait_for

# Small, so the "resolved" comes soon; wide enough for 12 logins (quick hashes: conftest).
WINDOW_S = 4


class Receiver:
    """A webhook on loopback that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        bodies: list[dict] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers["content-length"])
                bodies.append(json.loads(self.rfile.read(size)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def titles(self) -> list[str]:
        return [b["title"] for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def rules_file(tmp_path: Path, threshold: int = 10, window_s: float = WINDOW_S) -> str:
    path = tmp_path / "alerts.toml"
    path.write_text(
        "defaults = false\n\n[[rule]]\n"
        'name = "login_failures"\nkind = "auth_failure"\ndetails = ["password", "totp"]\n'
        f"threshold = {threshold}\nwindow_s = {window_s}\ncooldown_s = 3600\n"
        'summary = "Many failed logins"\n'
    )
    return str(path)


def bad_logins(base: str, n: int) -> list[int]:
    def one(_: int) -> int:
        res = httpx.post(f"{base}/login", data={"username": "admin", "password": "guess"})
        return res.status_code

    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(one, range(n)))


def alert_state(api, rule: str) -> dict:
    return next(a for a in api.get("/api/security/summary").json()["alerts"] if a["rule"] == rule)


def test_twelve_bad_logins_send_one_alert_then_resolved_and_a_burst_in_cooldown_sends_nothing(
    make_fleet, receiver, tmp_path
):
    fleet = make_fleet(
        hosts=1,
        agents=False,
        env={
            "NIXFLEET_ALERT_RULES_FILE": rules_file(tmp_path),
            # A long read timeout: on a loaded machine a timeout means a retry, a duplicate.
            "NIXFLEET_ALERT_URLS": f"json://127.0.0.1:{receiver.port}/hook?rto=30",
            "NIXFLEET_ALERT_ALLOW_PRIVATE": "true",
            # The login throttle would answer 429 before the alert threshold.
            "NIXFLEET_LOGIN_FREE_FAILURES": "1000",
            "NIXFLEET_RATE_LIMIT_LOGIN": "off",
        },
    )
    assert bad_logins(fleet.base, 12) == [401] * 12
    wait_for(lambda: len(receiver.bodies) >= 2, 60, "the alert and its resolution")
    assert len(receiver.bodies) == 2, receiver.bodies
    firing, resolved = receiver.bodies
    assert firing["title"] == "NixFleet alert: login_failures"
    assert firing["type"] == "failure"
    assert "Many failed logins" in firing["message"]
    assert "127.0.0.1" in firing["message"]  # the offending address
    assert resolved["title"] == "NixFleet resolved: login_failures"
    assert resolved["type"] == "success"

    api = fleet.api()
    assert bad_logins(fleet.base, 12) == [401] * 12
    wait_for(lambda: alert_state(api, "login_failures")["firing"], 30, "the second incident")
    assert alert_state(api, "login_failures")["silent"]
    wait_for(lambda: not alert_state(api, "login_failures")["firing"], 60, "its end")
    assert receiver.titles() == [
        "NixFleet alert: login_failures",
        "NixFleet resolved: login_failures",
    ]
    channel = api.get("/api/security/summary").json()["channels"][0]
    assert channel["ok"] is True and channel["sent"] == 2
    assert "json://127.0.0.1" in channel["channel"]


def test_a_channel_that_never_answers_does_not_hold_up_logins(make_fleet, tmp_path):
    # Accepts connections (the kernel does) but never reads or answers them.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        fleet = make_fleet(
            hosts=1,
            agents=False,
            env={
                "NIXFLEET_ALERT_RULES_FILE": rules_file(tmp_path, threshold=1),
                "NIXFLEET_ALERT_URLS": f"json://127.0.0.1:{port}/hook?cto=300&rto=300",
                "NIXFLEET_ALERT_ALLOW_PRIVATE": "true",
                # The login throttle would answer 429 before the alert threshold.
                "NIXFLEET_LOGIN_FREE_FAILURES": "1000",
                "NIXFLEET_RATE_LIMIT_LOGIN": "off",
            },
        )
        api = fleet.api()
        assert bad_logins(fleet.base, 1) == [401]

        def in_flight() -> bool:
            ch = api.get("/api/security/summary").json()["channels"][0]
            return ch["last_attempt"] is not None and ch["ok"] is None

        wait_for(in_flight, 30, "the alert to be stuck on the silent channel")
        # While that send hangs, logins (bad and good) keep completing.
        assert bad_logins(fleet.base, 5) == [401] * 5
        fleet.api()
        assert in_flight()  # still stuck: the logins above did not wait for it
        # Nor does it hold up shutdown (the channel's read timeout is 300 s).
        fleet.server.terminate()
        assert fleet.server.wait(timeout=60) in (0, -15)  # uvicorn re-raises SIGTERM
    finally:
        silent.close()


def test_a_webhook_on_a_private_address_is_refused_unless_allowed(make_fleet, receiver, tmp_path):
    fleet = make_fleet(
        hosts=1,
        agents=False,
        env={
            "NIXFLEET_ALERT_RULES_FILE": rules_file(tmp_path, threshold=1),
            "NIXFLEET_ALERT_URLS": f"json://127.0.0.1:{receiver.port}/hook",
        },
    )
    api = fleet.api()
    assert bad_logins(fleet.base, 1) == [401]

    def failed() -> dict | None:
        ch = api.get("/api/security/summary").json()["channels"][0]
        return ch if ch["ok"] is False else None

    channel = wait_for(failed, 30, "the channel to report the refusal")
    assert "private address" in channel["last_error"]
    assert receiver.bodies == []


def test_admin_alert_test_sends_a_test_message(receiver, tmp_path):
    env = {
        "NIXFLEET_DEMO": "true",
        "NIXFLEET_DATA_DIR": str(tmp_path),
        "NIXFLEET_ALERT_URLS": f"json://127.0.0.1:{receiver.port}/hook",
        "NIXFLEET_ALERT_ALLOW_PRIVATE": "true",
        # The login throttle would answer 429 before the alert threshold.
        "NIXFLEET_LOGIN_FREE_FAILURES": "1000",
        "NIXFLEET_RATE_LIMIT_LOGIN": "off",
    }
    res = run_cli(["admin", "alert", "test"], env)
    assert res.returncode == 0, res.stderr
    assert receiver.titles() == ["NixFleet test alert"]
    assert "json://127.0.0.1" in res.stdout

    res = run_cli(["admin", "alert", "test"], {**env, "NIXFLEET_ALERT_ALLOW_PRIVATE": "false"})
    assert res.returncode == 1
    assert "private address" in res.stdout
    assert len(receiver.bodies) == 1
