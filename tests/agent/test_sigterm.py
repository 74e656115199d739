"""systemd and launchd stop the agent with SIGTERM: it exits promptly, and cleanly, whatever
it is doing; a build it started keeps running and is reported by the next agent."""

from __future__ import annotations

import signal
import socket
import threading

from websockets.sync.server import ServerConnection, serve

from conftest import wait_for
from tlsservers import Recorder

# Far above the agent's own bound (about a second), far below the 10 s it used to hang.
EXIT_WAIT_S = 5


def _stopped(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(EXIT_WAIT_S)


def test_sigterm_stops_an_agent_dialling_a_dashboard_that_never_answers(agent):
    silent = Recorder(None)  # accepts the connection, reads the upgrade, never replies
    try:
        a = agent(f"http://127.0.0.1:{silent.port}", "--allow-insecure")
        wait_for(lambda: b"GET /api/agent/ws" in silent.received, 30, "the upgrade request")
        assert _stopped(a.proc) == 0
    finally:
        silent.close()


def test_sigterm_stops_an_agent_backing_off(agent):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: every dial is refused
    a = agent(
        f"http://127.0.0.1:{port}", "--allow-insecure", "--backoff-floor", "60",
        "--backoff-cap", "120",
    )  # fmt: skip
    wait_for(lambda: "retry in" in a.log(), 30, "the first refused dial")
    assert _stopped(a.proc) == 0


def test_sigterm_stops_an_agent_retrying_its_enrollment(agent, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = agent(
        f"http://127.0.0.1:{port}", "--allow-insecure", "--token-file", str(tmp_path / "none"),
        "--enroll-code", "nfe_code", "--backoff-floor", "60", "--backoff-cap", "120",
    )  # fmt: skip
    wait_for(lambda: "enrollment: cannot reach" in a.log(), 30, "the first enrollment attempt")
    assert _stopped(a.proc) == 0


def test_sigterm_stops_an_agent_waiting_for_welcome(agent):
    got_hello = threading.Event()
    release = threading.Event()

    def mute(ws: ServerConnection) -> None:
        ws.recv()  # the hello
        got_hello.set()
        release.wait(30)

    with serve(mute, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        try:
            a = agent(f"http://127.0.0.1:{port}", "--allow-insecure")
            assert got_hello.wait(30), a.log()
            assert _stopped(a.proc) == 0
        finally:
            release.set()
            server.shutdown()


def test_sigterm_stops_a_connected_agent_and_the_dashboard_sees_it_go(make_fleet):
    rf = make_fleet(hosts=1)
    api = rf.api()
    assert _stopped(rf.agents.pop("atlas")) == 0
    wait_for(lambda: not api.host("atlas")["online"], 30, "atlas to be shown offline")


def test_sigterm_during_a_build_leaves_it_running_and_the_next_agent_reports_it(make_fleet):
    rf = make_fleet(hosts=1, build_seconds=3)
    api = rf.api()
    cid = api.command("atlas", "switch")
    api.wait_state(cid, {"running"})
    assert _stopped(rf.agents.pop("atlas")) == 0
    rf.start_agent("atlas")
    cmd = api.wait_state(cid, {"succeeded", "failed", "lost", "timed_out"}, timeout=60)
    # A killed runner would have been reported as failed ("died without a result").
    assert cmd["state"] == "succeeded", cmd
    assert "activating the configuration..." in [line["text"] for line in cmd["output"]]
