"""A browser that stops reading costs a bounded number of bytes, and its stream is closed
when its session logs out, even while the dashboard is blocked writing to it."""

from __future__ import annotations

import re
import socket
import time

import httpx

from conftest import wait_for

METRICS = "metrics-token-for-the-stream-tests-0123456789"
BIG_TEST = """#!/bin/sh
# 4 MB of output in 1 KB lines: enough to fill every buffer between us and the browser.
i=0
while [ $i -lt 4000 ]; do printf '%01000d\\n' $i; i=$((i+1)); done
"""


def _metric(fleet, name: str) -> float:
    text = httpx.get(f"{fleet.base}/metrics", headers={"Authorization": f"Bearer {METRICS}"}).text
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _stalled_stream(fleet, api) -> socket.socket:
    """Open /api/events with this session and never read from it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", fleet.port))
    cookie = f"nixfleet_session={api.http.cookies['nixfleet_session']}"
    sock.sendall(
        f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode()
    )
    return sock


def test_a_stalled_browser_costs_bounded_bytes_and_logout_closes_it(make_fleet):
    fleet = make_fleet(
        hosts=1,
        agents=False,
        env={"NIXFLEET_METRICS_TOKEN": METRICS, "NIXFLEET_SSE_QUEUE_BYTES": "262144"},
    )
    fleet.start_agent("atlas")
    api = fleet.api()
    api.wait_online(["atlas"])
    script = fleet.host("atlas").root / "repo" / "hosts" / "atlas" / "tests" / "T99-big.sh"
    script.write_text(BIG_TEST)
    script.chmod(0o755)
    stalled = _stalled_stream(fleet, api)
    wait_for(
        lambda: _metric(fleet, "nixfleet_event_stream_subscribers") == 1, 10, "the stream to open"
    )
    dropped_before = _metric(fleet, "nixfleet_event_stream_dropped_total")
    command = api.command("atlas", "test")
    api.wait_state(command, {"succeeded", "failed"}, 60)
    # The stalled browser missed events rather than holding 4 MB of them.
    assert _metric(fleet, "nixfleet_event_stream_dropped_total") > dropped_before
    stats = (fleet.fleet.root / "dashboard.log").read_text()
    assert "unhandled error" not in stats
    # Logging out ends the session's streams, the stalled one included.
    assert api.post("/logout").status_code == 303
    wait_for(
        lambda: _metric(fleet, "nixfleet_event_stream_subscribers") == 0,
        15,
        "the stalled stream to close",
    )
    stalled.setblocking(False)
    deadline = time.monotonic() + 10
    closed = False
    while time.monotonic() < deadline and not closed:
        try:
            closed = stalled.recv(65536) == b""
        except BlockingIOError:
            time.sleep(0.05)
        except OSError:
            closed = True
    assert closed, "the server kept the stalled stream's connection open"
