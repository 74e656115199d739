"""Half-open HTTP requests cannot take the dashboard down at the default limit of 1,024 open
files: health probes, browsers and agents keep working while 1,100 unfinished requests
arrive from one address or from many, and the server closes them after its header timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from conftest import wait_for

FLOOD = 1100
HEADER_TIMEOUT_S = 3
HALF_REQUEST = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def _serve_with_file_limit(fleet, limit: int) -> None:
    """Restart the fleet's dashboard with soft and hard open-file limits of `limit`."""
    fleet.kill_dashboard()
    port_file = fleet.fleet.root / "dashboard.port"
    port_file.unlink(missing_ok=True)
    log = (fleet.fleet.root / "dashboard.log").open("ab")
    cmd = [sys.executable, "-m", "nixfleet", "serve", "--port", str(fleet.port)]
    fleet.server = subprocess.Popen(
        ["prlimit", f"--nofile={limit}:{limit}", *cmd, "--port-file", str(port_file)],
        env={**os.environ, **fleet.fleet.env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: port_file.exists() and port_file.read_text(), 30, "the dashboard")


def _flood(port: int, sources: list[str]) -> list[socket.socket]:
    socks = []
    for i in range(FLOOD):
        s = socket.socket()
        s.bind((sources[i % len(sources)], 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
    time.sleep(0.5)
    for s in socks:
        try:
            s.send(HALF_REQUEST)
        except OSError:
            pass  # already closed by the server
    return socks


def _closed_by_server(socks: list[socket.socket]) -> int:
    closed = 0
    for s in socks:
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def _probes(base: str, api, n: int = 10) -> list[int]:
    """Return the status of n health probes and logged-in API calls, one a 0.2 s."""
    statuses = []
    for _ in range(n):
        try:
            statuses.append(httpx.get(f"{base}/health", timeout=5).status_code)
            statuses.append(api.get("/api/hosts").status_code)
        except httpx.HTTPError:
            statuses.append(0)
        time.sleep(0.2)
    return statuses


@pytest.mark.parametrize("spread", ["one address", "64 addresses"])
def test_half_open_requests_do_not_starve_browsers_agents_or_probes(make_fleet, spread):
    fleet = make_fleet(
        hosts=1, agents=False, env={"NIXFLEET_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)}
    )
    _serve_with_file_limit(fleet, 1024)
    fleet.start_agent("atlas")
    api = fleet.api()
    api.wait_online(["atlas"])
    sources = ["127.0.0.1"] if spread == "one address" else [f"127.0.9.{i}" for i in range(1, 65)]
    started = time.monotonic()
    socks = _flood(fleet.port, sources)
    try:
        during = _probes(fleet.base, api)
        assert during.count(200) == len(during), during
        assert api.host("atlas")["online"]
        command = api.command("atlas", "pull")
        assert api.wait_state(command, {"succeeded"}, 30)["state"] == "succeeded"
        wait_for(
            lambda: _closed_by_server(socks) >= FLOOD * 0.99,
            HEADER_TIMEOUT_S + 20,
            "the server to close the unfinished requests",
        )
        print(
            f"\n{spread}: {len(during)} probes answered during the flood; all {FLOOD}"
            f" half-open closed within {time.monotonic() - started:.1f} s"
        )
    finally:
        for s in socks:
            s.close()
    assert fleet.server is not None and fleet.server.poll() is None
    fleet.server.send_signal(signal.SIGTERM)
    fleet.server.wait(20)
    text = (fleet.fleet.root / "dashboard.log").read_text()
    assert "Too many open files" not in text and "out of system resource" not in text
