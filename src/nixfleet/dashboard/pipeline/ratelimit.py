"""Per-address rate limits in front of the routes that can be hammered (pure ASGI).

One middleware instead of per-route code: it names the route, takes one hit per rate of
that route for the client address (proxy-aware, see deps.request_origin) and answers 429
itself, before authentication and before any database work. An agent's WebSocket
handshake is refused with an HTTP 429 instead of being upgraded.

The agent handshake counts failures only, and never stands between a valid token and its
host: a flood of bad handshakes from an address (a NAT shared with good hosts) makes that
address's *refusals* 429 with Retry-After, while a handshake whose token verifies is
accepted whatever the count. Checking a token is one HMAC and one indexed lookup; the
connection guard (dashboard/server.py) bounds how many a single address can have open.

A request with an API token (`Authorization: Bearer nft_…`) also counts against that
token, wherever it comes from (a CI job's token shared by many runners). The token is
named by its SHA-256 in the counts, never in clear.

Counts live where NIXFLEET_RATE_LIMIT_STORAGE says. Left empty, they live in the database
on PostgreSQL (storage/ratecounts.py: every replica counts against one limit, with no
extra service) and in memory on SQLite (one process). Any `limits` storage URI (memory://,
redis://…) chooses that storage instead.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable
from typing import Protocol

import limits
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nixfleet.config import Settings
from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.dashboard.deps import request_origin
from nixfleet.dashboard.pipeline.errors import DATABASE_ERRORS, send_error
from nixfleet.storage.db import Database, failure_reason
from nixfleet.storage.ratecounts import WindowCounts

log = logging.getLogger("nixfleet.ratelimit")


def route_name(scope: Scope) -> str | None:
    """Return the rate-limited route a request belongs to, or None if it is not limited."""
    path: str = scope["path"]
    if scope["type"] == "websocket":
        return "agent_ws" if path == "/api/agent/ws" else None
    if scope["type"] != "http":
        return None
    if path == "/login":
        return "login" if scope["method"] == "POST" else None
    if path.startswith("/login/oidc"):  # each start stores a row; each callback asks the provider
        return "login"
    if path == "/api/events":
        return "events"
    return "api" if path.startswith("/api/") else None


def _token_key(scope: Scope) -> str | None:
    """Return the key an API token is counted under (its SHA-256), or None without one."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip().startswith(b"nft_"):
                return hashlib.sha256(token.strip()).hexdigest()
    return None


def _async_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else f"async+{uri}"


class Counter(Protocol):
    async def hit(self, key: str, item: limits.RateLimitItem) -> int | None:
        """Count one hit; return None if it fits, else the seconds until it would."""
        ...


class LibraryCounter:
    """The `limits` library's sliding-window counter on one of its storages."""

    def __init__(self, uri: str) -> None:
        self.limiter = SlidingWindowCounterRateLimiter(storage_from_string(_async_uri(uri)))

    async def hit(self, key: str, item: limits.RateLimitItem) -> int | None:
        if await self.limiter.hit(item, key):
            return None
        stats = await self.limiter.get_window_stats(item, key)
        return max(1, math.ceil(stats.reset_time - time.time()))


class DatabaseCounter:
    """The same counter in PostgreSQL, shared by the replicas (storage/ratecounts.py)."""

    def __init__(self, db: Database) -> None:
        self.counts = WindowCounts(db)

    async def hit(self, key: str, item: limits.RateLimitItem) -> int | None:
        return await self.counts.hit(f"{key}/{item}", item.amount, item.get_expiry())


def counter_for(storage: str, db: Database) -> Counter:
    """Return the counter NIXFLEET_RATE_LIMIT_STORAGE names ("" = the database's choice)."""
    if storage:
        return LibraryCounter(storage)
    return LibraryCounter("memory://") if db.is_sqlite else DatabaseCounter(db)


class RateLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.storage = settings.rate_limit_storage
        # Chosen at the first request: the database is opened in the app's lifespan.
        self.counter: Counter | None = None
        configured = {
            "login": settings.rate_limit_login,
            "agent_ws": settings.rate_limit_agent_ws,
            "api": settings.rate_limit_api,
            "events": settings.rate_limit_events,
            "token": settings.rate_limit_token,
        }
        self.rates = {
            name: [] if rate == "off" else limits.parse_many(rate)
            for name, rate in configured.items()
        }

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async where nothing is left to do once the app is called: an agent's
        # WebSocket would keep this frame as long as it is connected (middleware.py).
        name = route_name(scope) if scope["type"] in ("http", "websocket") else None
        if name is None:
            return self.app(scope, receive, send)
        address = request_origin(scope).address
        if name == "agent_ws":
            return self.app(scope, receive, self._count_refusals(scope, send, address))
        return self._limited(scope, receive, send, name, address)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, name: str, address: str
    ) -> None:
        retry_after = await self._hit(scope, name, address)
        token = _token_key(scope) if retry_after is None else None
        if token is not None:
            name = "token"
            retry_after = await self._hit(scope, name, token)
        if retry_after is None:
            await self.app(scope, receive, send)
            return
        scope["app"].state.ctx.security.emit(
            SecurityEvent(EventKind.RATE_LIMITED, address=address, detail=name)
        )
        await _deny(scope, receive, send, name, retry_after)

    def _count_refusals(self, scope: Scope, send: Send, address: str) -> Send:
        """Return a send that counts a refused handshake and, over the limit, says 429."""
        swallow = False

        async def counting(message: Message) -> None:
            nonlocal swallow
            if message["type"] == "websocket.http.response.start" and message["status"] in (
                401,
                403,
            ):
                retry_after = await self._counted_refusal(scope, address)
                if retry_after is not None:
                    swallow = True
                    scope["app"].state.ctx.security.emit(
                        SecurityEvent(EventKind.RATE_LIMITED, address=address, detail="agent_ws")
                    )
                    await _deny_upgrade(send, "agent_ws", retry_after)
                    return
            if swallow and message["type"] == "websocket.http.response.body":
                return
            await send(message)

        return counting

    async def _counted_refusal(self, scope: Scope, address: str) -> int | None:
        """Count one refused handshake; a database too busy to count it lets it go uncounted.

        The handshake is refused either way, and this runs while its answer is being sent,
        where an error could only end as a traceback and a dropped connection.
        """
        try:
            return await self._hit(scope, "agent_ws", address)
        except DATABASE_ERRORS as exc:
            log.warning(
                "rate limit: an agent handshake refusal went uncounted: %s", failure_reason(exc)
            )
            return None

    async def _hit(self, scope: Scope, name: str, address: str) -> int | None:
        """Return None if the request may pass, else the seconds until it may retry."""
        if self.counter is None:
            self.counter = counter_for(self.storage, scope["app"].state.ctx.db)
        for item in self.rates[name]:
            retry_after = await self.counter.hit(f"{name}/{address}", item)
            if retry_after is not None:
                return retry_after
        return None


async def _deny_upgrade(send: Send, name: str, retry_after: int) -> None:
    detail, headers = _denial(name, retry_after)
    await send_error(send, 429, "rate_limited", detail, headers=headers, kind="websocket.http")


def _denial(name: str, retry_after: int) -> tuple[str, list[tuple[bytes, bytes]]]:
    if name == "token":
        detail = f"too many requests with this API token; retry in {retry_after} s"
    else:
        detail = f"too many requests to {name} from this address; retry in {retry_after} s"
    return detail, [(b"retry-after", str(retry_after).encode())]


async def _deny(scope: Scope, receive: Receive, send: Send, name: str, retry_after: int) -> None:
    detail, headers = _denial(name, retry_after)
    if scope["type"] == "http":
        await send_error(send, 429, "rate_limited", detail, headers=headers)
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await _deny_upgrade(send, name, retry_after)
    else:  # the server cannot send an HTTP answer to an upgrade: refuse it (403)
        await send({"type": "websocket.close", "code": 1008})
