"""The HTTP server around the app: uvicorn's configuration and the connection guard.

Uvicorn has no timeout for a request's headers and no cap on connections: 1,100
half-open requests (headers never finished) at systemd's default limit of 1,024 open
files used every descriptor, and health probes went unanswered. So the HTTP protocol is
subclassed (docs/reliability.md "Web, audit, logs and denial of service"):

1. A connection must finish each request's headers within NIXFLEET_HEADER_TIMEOUT_S,
   counted from its first byte (or from connecting), or it is closed.
2. One address may hold NIXFLEET_MAX_CONNECTIONS_PER_ADDRESS connections that have not
   become WebSockets; more are closed at once.
3. In all, connections (WebSockets included) stay below NIXFLEET_MAX_CONNECTIONS
   (default: the open-file limit less a reserve for the database and logs). At the cap,
   the oldest connection still waiting for its headers is closed to make room, so a
   flood of slow clients cannot keep a fresh request (a browser, an agent, a probe) out.

An agent's WebSocket is counted from its upgrade by the total only: a NAT with thousands
of hosts behind one address is fine.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import ssl
from collections import Counter, OrderedDict
from typing import Any, ClassVar, cast

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nixfleet.config import Settings
from nixfleet.core.framing import MAX_MESSAGE_BYTES
from nixfleet.dashboard.pipeline.tlspeer import TlsPeerWebSocketProtocol
from nixfleet.dashboard.routes.agent_ws import AgentsPastTheFrame

log = logging.getLogger("nixfleet.server")
# Descriptors kept back from the connection cap: SQLite, its WAL, logs, git, DNS.
FD_RESERVE = 64


def open_file_limit() -> int:
    """Return this process's open-file limit, raised to its hard limit first.

    systemd's default soft limit is 1,024 with a much higher hard limit; a server may
    raise it itself (the NixOS module also sets LimitNOFILE).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class ConnectionGuard:
    """Who holds which connection, and which of them still wait for their headers."""

    def __init__(self, max_total: int, per_address: int, header_timeout_s: float) -> None:
        self.max_total, self.per_address = max_total, per_address
        self.header_timeout_s = header_timeout_s
        self.addresses: Counter[str] = Counter()
        self.waiting: OrderedDict[GuardedHttpProtocol, None] = OrderedDict()
        self.refused = 0  # closed on arrival: per-address cap, or the total with no victim
        self.evicted = 0  # waiting ones closed to make room
        self.timed_out = 0  # headers not finished in time

    def admit(self, conn: GuardedHttpProtocol, address: str, open_now: int) -> bool:
        """Return whether conn may stay, making room at a cap when a waiting one can go.

        1. At the per-address cap: close that address's oldest connection still waiting
           for its headers (a probe from a flooded address still gets through).
        2. At the total cap: close the oldest waiting connection of anyone.
        3. Nothing to close: refuse conn.
        """
        if self.addresses[address] >= self.per_address and not self._evict(address):
            self.refused += 1
            return False
        if open_now > self.max_total and not self._evict(None):
            self.refused += 1
            return False
        self.addresses[address] += 1
        return True

    def _evict(self, address: str | None) -> bool:
        victim = next((c for c in self.waiting if address is None or c.address == address), None)
        if victim is None:
            return False
        self.evicted += 1
        victim.drop()
        return True

    def release(self, address: str) -> None:
        self.addresses[address] -= 1
        if self.addresses[address] <= 0:
            del self.addresses[address]

    def counts(self) -> dict[str, int]:
        return {
            "refused": self.refused,
            "evicted": self.evicted,
            "timed_out": self.timed_out,
            "waiting": len(self.waiting),
        }


class GuardedHttpProtocol(HttpToolsProtocol):
    """Uvicorn's HTTP protocol with a header timeout and the guard's connection caps."""

    guard: ClassVar[ConnectionGuard]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False
        self.address = self.client[0] if self.client else ""
        self._admitted = self.guard.admit(self, self.address, len(self.connections))
        if not self._admitted:
            self.connections.discard(self)
            transport.abort()
            return
        self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        self.guard.waiting[self] = None
        if self._timer is None:
            self._timer = self.loop.call_later(self.guard.header_timeout_s, self._too_slow)

    def _headers_arrived(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self in self.guard.waiting:
            self.guard.timed_out += 1
            self.drop()

    def drop(self) -> None:
        """Close this connection now (it is still waiting for its request's headers)."""
        self._headers_arrived()
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        # A keep-alive connection starting its next request must finish it in time too.
        if self.cycle is None or self.cycle.response_complete:
            self._wait_for_headers()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # Lets a stream whose session ended cut its connection even while it is blocked
        # writing to a browser that stopped reading (dashboard/sse.py).
        scope = cast(dict[str, Any], self.scope)
        scope["extensions"] = {"nixfleet.abort": self.transport.abort}

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        self._leave()
        super().handle_websocket_upgrade()
        # The WebSocket protocol has the transport now; this object is done. Its parser
        # calls back into it and it holds the parser: a cycle that only a full collection
        # frees, which serve's thresholds make rare (cli/serve.py). With its request's
        # scope and headers that was 0.9 KiB a connected agent (docs/benchmarks.md).
        self.parser = None  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        super().connection_lost(exc)

    def _leave(self) -> None:
        self._headers_arrived()
        if getattr(self, "_admitted", False):
            self._admitted = False
            self.guard.release(self.address)


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedHttpProtocol]:
    """Return the HTTP protocol class bound to guard (uvicorn takes a class)."""
    return type("Guarded", (GuardedHttpProtocol,), {"guard": guard})


def connection_guard(settings: Settings) -> ConnectionGuard:
    limit = open_file_limit()
    total = settings.max_connections or max(16, limit - FD_RESERVE)
    return ConnectionGuard(total, settings.max_connections_per_address, settings.header_timeout_s)


def uvicorn_config(
    asgi: Any, settings: Settings, log_level: str, guard: ConnectionGuard
) -> uvicorn.Config:
    """Return uvicorn's configuration for the dashboard."""
    return uvicorn.Config(
        asgi,
        # Said, not guessed: uvicorn takes an app whose __call__ is not a coroutine function
        # for ASGI 2, and the app here is AgentsPastTheFrame, a plain callable.
        interface="asgi3",
        log_level=log_level,
        # Our AccessLog middleware replaces uvicorn's (real client address, request id,
        # user); uvicorn's own records go through the handler the CLI configured.
        access_log=False,
        log_config=None,
        # Forwarded headers are resolved by nixfleet.security.clientip, per request.
        proxy_headers=False,
        http=guarded_protocol(guard),
        timeout_keep_alive=settings.keep_alive_s,
        # The limit agents batch under (core.protocol); a larger frame gets close 1009.
        ws_max_size=MAX_MESSAGE_BYTES,
        ws=TlsPeerWebSocketProtocol,
        ws_ping_interval=settings.agent_ping_s,
        ws_ping_timeout=settings.agent_ping_s,
        # Agent messages are small JSON: compressing them saves little and costs each
        # connection its own zlib state (about 40 KiB of the dashboard's memory per agent).
        ws_per_message_deflate=False,
        lifespan="on",
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        ssl_ca_certs=settings.client_ca,
        # Optional at the TLS level: browsers have no client certificate; hosts bound to
        # one are refused without it by the agent handshake. A presented one must verify.
        ssl_cert_reqs=ssl.CERT_OPTIONAL if settings.client_ca else ssl.CERT_NONE,
    )


def run(asgi: Any, settings: Settings, log_level: str, sock: socket.socket) -> None:
    """Serve asgi on the pre-bound sock until a signal stops it."""
    guard = connection_guard(settings)
    log.info(
        "server: at most %d connections (%d per address before upgrade), %.0f s for headers",
        guard.max_total,
        guard.per_address,
        guard.header_timeout_s,
    )
    app = AgentsPastTheFrame(asgi) if isinstance(asgi, FastAPI) else asgi
    uvicorn.Server(uvicorn_config(app, settings, log_level, guard)).run(sockets=[sock])
