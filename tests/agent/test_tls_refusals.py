"""The agent refuses a dashboard it cannot trust before it sends a single byte.

Each server records every byte it receives after the TLS handshake: a refused server
must record none, so the agent's token never reached it.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
import trustme

from conftest import wait_for
from tlsservers import Recorder, pin_of, server_context


@pytest.fixture
def servers() -> Iterator[list[Recorder]]:
    running: list[Recorder] = []
    yield running
    for s in running:
        s.close()


def _serve(servers: list[Recorder], ctx: ssl.SSLContext) -> Recorder:
    servers.append(Recorder(ctx))
    return servers[-1]


def _refused(agent_proc, server: Recorder, reason: str) -> None:
    wait_for(lambda: f"TLS failure: {reason}" in agent_proc.log(), 30, f"a {reason} failure")
    wait_for(lambda: server.connections >= 2, 30, "a second attempt after backoff")
    wait_for(lambda: server.closed >= 2, 30, "the server to see both connections end")
    assert server.received == b""
    assert "Bearer" not in agent_proc.log()


def test_a_server_with_a_certificate_from_another_ca_is_refused_with_no_byte_sent(
    agent, ca, servers
):
    _, ca_file = ca
    server = _serve(servers, server_context(trustme.CA().issue_cert("127.0.0.1")))
    proc = agent(f"https://127.0.0.1:{server.port}", "--ca-file", str(ca_file))
    _refused(proc, server, "unknown_ca")


def test_a_server_whose_key_misses_the_pin_is_refused_after_the_handshake_with_no_byte_sent(
    agent, ca, servers
):
    authority, ca_file = ca
    pinned, served = authority.issue_cert("127.0.0.1"), authority.issue_cert("127.0.0.1")
    server = _serve(servers, server_context(served))
    proc = agent(
        f"https://127.0.0.1:{server.port}", "--ca-file", str(ca_file), "--pin", pin_of(pinned)
    )
    _refused(proc, server, "pin_mismatch")
    assert server.handshakes >= 2  # the certificate chain itself was fine


def test_the_right_pin_lets_the_upgrade_request_through(agent, ca, servers):
    # The control for the refusals above: this recorder does see what an agent sends.
    authority, ca_file = ca
    backup = authority.issue_cert("127.0.0.1")
    cert = authority.issue_cert("127.0.0.1")
    server = _serve(servers, server_context(cert))
    agent(
        f"https://127.0.0.1:{server.port}",
        "--ca-file",
        str(ca_file),
        "--pin",
        pin_of(backup),
        "--pin",
        pin_of(cert),
    )
    wait_for(lambda: b"\r\n\r\n" in server.received, 30, "the upgrade request")
    assert server.received.startswith(b"GET /api/agent/ws HTTP/1.1")
    assert b"Bearer nfa_transport-test-token" in server.received


def test_a_tls_1_2_only_server_is_refused_with_min_tls_1_3(agent, ca, servers):
    authority, ca_file = ca
    ctx = server_context(authority.issue_cert("127.0.0.1"), max_tls=ssl.TLSVersion.TLSv1_2)
    server = _serve(servers, ctx)
    proc = agent(f"https://127.0.0.1:{server.port}", "--ca-file", str(ca_file), "--min-tls", "1.3")
    _refused(proc, server, "protocol_version")


def test_a_certificate_for_another_name_is_refused(agent, ca, servers):
    authority, ca_file = ca
    server = _serve(servers, server_context(authority.issue_cert("dashboard.example")))
    proc = agent(f"https://127.0.0.1:{server.port}", "--ca-file", str(ca_file))
    _refused(proc, server, "hostname_mismatch")


def test_an_expired_certificate_is_refused(agent, ca, servers):
    authority, ca_file = ca
    import datetime

    old = authority.issue_cert(
        "127.0.0.1",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    server = _serve(servers, server_context(old))
    proc = agent(f"https://127.0.0.1:{server.port}", "--ca-file", str(ca_file))
    _refused(proc, server, "expired")
