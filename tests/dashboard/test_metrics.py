"""/metrics: refused without the token or from elsewhere; counters move by exact counts."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from conftest import wait_for

TOKEN = "metrics-token-for-tests-0123456789"


def scrape(base: str, token: str = TOKEN) -> dict[tuple[str, tuple], float]:
    res = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(res.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def agent_handshake(base: str, host_id: str, token: str) -> None:
    async def attempt() -> None:
        url = base.replace("http://", "ws://") + "/api/agent/ws"
        headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": host_id}
        with pytest.raises(InvalidStatus):
            await websockets.connect(url, additional_headers=headers, open_timeout=5)

    asyncio.run(attempt())


@pytest.fixture
def fleet(make_fleet):
    return make_fleet(hosts=1, agents=True, env={"NIXFLEET_METRICS_TOKEN": TOKEN})


def test_metrics_are_refused_without_the_token(fleet):
    assert httpx.get(f"{fleet.base}/metrics").status_code == 401
    wrong = httpx.get(f"{fleet.base}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized"
    basic = httpx.get(f"{fleet.base}/metrics", auth=("x", TOKEN))
    assert basic.status_code == 401
    after = scrape(fleet.base)
    assert value(after, "nixfleet_auth_failures_total", kind="metrics_token") == 3


def test_security_counters_move_by_the_exact_counts(fleet):
    api = fleet.api()
    before = scrape(fleet.base)
    for _ in range(3):
        bad = httpx.post(f"{fleet.base}/login", data={"username": "admin", "password": "x"})
        assert bad.status_code == 401
    for _ in range(2):
        assert (
            api.http.post("/api/hosts/atlas/command", json={"command": "pull"}).status_code == 403
        )
    for _ in range(2):
        agent_handshake(fleet.base, "atlas", "nfa_not-the-token")
    after = scrape(fleet.base)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("nixfleet_auth_failures_total", kind="password") == 3
    assert delta("nixfleet_auth_failures_total", kind="agent_token") == 2
    assert delta("nixfleet_csrf_failures_total") == 2
    assert delta("nixfleet_auth_failures_total", kind="totp") == 0
    assert value(after, "nixfleet_agents_connected") == 1


def test_command_metrics_count_finished_commands_and_their_duration(fleet):
    api = fleet.api()
    before = scrape(fleet.base)
    for kind in ("pull", "test"):
        api.wait_state(api.command("atlas", kind), {"succeeded", "failed"})
    after = wait_for(
        lambda: (
            (s := scrape(fleet.base))
            and value(s, "nixfleet_command_duration_seconds_count", kind="test") >= 1
            and s
        ),
        what="the command metrics",
    )
    assert (
        value(after, "nixfleet_commands_total", kind="pull", result="succeeded")
        - value(before, "nixfleet_commands_total", kind="pull", result="succeeded")
        == 1
    )
    assert value(after, "nixfleet_commands_total", kind="test", result="succeeded") == 1
    assert value(after, "nixfleet_command_duration_seconds_count", kind="pull") == 1
    assert value(after, "nixfleet_command_duration_seconds_sum", kind="pull") > 0


def test_event_stream_subscribers_are_counted(fleet):
    api = fleet.api()
    with api.http.stream("GET", "/api/events") as stream:
        lines = stream.iter_lines()  # held: a dropped iterator closes the connection
        next(lines)
        wait_for(
            lambda: value(scrape(fleet.base), "nixfleet_event_stream_subscribers") == 1,
            what="one subscriber",
        )
    wait_for(
        lambda: value(scrape(fleet.base), "nixfleet_event_stream_subscribers") == 0,
        what="no subscriber",
    )
    assert ("nixfleet_event_stream_dropped_total", ()) in scrape(fleet.base)


@pytest.mark.parametrize(("allow", "status"), [("127.0.0.0/8, ::1", 200), ("10.0.0.0/8", 403)])
def test_an_address_list_alone_admits_only_those_addresses(make_fleet, allow, status):
    fleet = make_fleet(hosts=1, agents=False, env={"NIXFLEET_METRICS_ALLOW": allow})
    assert httpx.get(f"{fleet.base}/metrics").status_code == status


def test_metrics_are_off_until_configured(make_fleet):
    fleet = make_fleet(hosts=1, agents=False)
    res = httpx.get(f"{fleet.base}/metrics")
    assert res.status_code == 403
    assert "NIXFLEET_METRICS_TOKEN" in res.json()["detail"]


_LOADED = """
import os, secrets, sys
from argon2 import PasswordHasher
os.environ.update(
    NIXFLEET_DATA_DIR=sys.argv[1],
    NIXFLEET_ADMIN_PASSWORD_HASH=PasswordHasher().hash("a long enough password"),
    NIXFLEET_AGENT_TOKEN_HASH_SECRET=secrets.token_urlsafe(32),
    NIXFLEET_SESSION_SECRETS=secrets.token_urlsafe(32),
)
if len(sys.argv) > 2:
    os.environ["NIXFLEET_METRICS_TOKEN"] = sys.argv[2]
import asyncio
from nixfleet.config import load_settings
from nixfleet.dashboard.app import create_app
from nixfleet.storage.migrate import upgrade
settings = load_settings()
upgrade(settings.db_url)
app = create_app(settings)

async def started() -> None:
    async with app.router.lifespan_context(app):  # the dashboard's parts are built here
        print("prometheus_client" in sys.modules)

asyncio.run(started())
"""


@pytest.mark.parametrize(("token", "loaded"), [((), "False"), ((TOKEN,), "True")])
def test_an_unscrapable_dashboard_does_not_load_the_metrics_library(tmp_path, token, loaded):
    # Nobody may read the counts: they are not kept, and prometheus_client (1.3 MiB) stays out.
    res = subprocess.run(
        [sys.executable, "-c", _LOADED, str(tmp_path), *token],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [loaded]
