"""Pure ASGI middleware (BaseHTTPMiddleware breaks streaming responses such as SSE).

Where a middleware has nothing left to do once it called the app, its `__call__` is a
plain function returning the app's awaitable: an async one would keep a coroutine frame
alive for as long as the request runs, and an agent's WebSocket runs as long as it is
connected (thousands of them, docs/benchmarks.md, issue 20).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nixfleet.dashboard.deps import is_https
from nixfleet.dashboard.pipeline.errors import send_database_answer, send_error

log = logging.getLogger("nixfleet.dashboard")


class CatchAll:
    """Give each request an id; turn an unhandled exception into a generic 500 naming it.

    The traceback goes to the log with the id, never to the client. Sits inside
    SecurityHeaders, so the 500 carries the same headers as every other response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self._catching(scope, receive, send)

    async def _catching(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        # The access log (outside) usually named the request already and sends the header.
        own_id = "request_id" not in state
        request_id: str = state.setdefault("request_id", secrets.token_hex(8))
        started = False

        async def tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if own_id:
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"x-request-id", request_id.encode()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        except Exception as exc:
            # A busy database met in middleware (no route handler to answer it): 503.
            if not started and await send_database_answer(scope, receive, tagged, exc):
                return
            log.exception(
                "dashboard: unhandled error, request id %s, on %s %s",
                request_id,
                scope.get("method"),
                scope.get("path"),
            )
            if started:
                raise  # the status line is gone; the server can only drop the connection
            detail = f"internal error; the dashboard log has the details under {request_id}"
            await send_error(tagged, 500, "internal", detail, fields={"request_id": request_id})


class BodyLimit:
    """Refuse request bodies over max_bytes with 413, by header and while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self._limited(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body is larger than the limit of {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_error(send, 413, "too_large", detail)
                return
        seen = 0
        rejected = False
        started = False

        async def limited() -> Message:
            # Answer 413 ourselves and tell the app the client left: raising instead would
            # be turned into a 400 "error parsing the body" by the framework.
            nonlocal seen, rejected
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes and not rejected:
                rejected = True
                if not started:
                    await send_error(send, 413, "too_large", detail)
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited, guarded_send)


# Nothing on the dashboard needs a device, sensor or payment API.
_PERMISSIONS = (
    b"accelerometer=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), "
    b"magnetometer=(), microphone=(), midi=(), payment=(), usb=()"
)


class SecurityHeaders:
    """Give each response a fresh CSP nonce (templates read scope['state']['csp_nonce']).

    HSTS goes out only when `hsts` is on and the browser really used HTTPS (directly or per
    a trusted proxy): browsers ignore it over plain HTTP anyway. A refused WebSocket
    handshake is an HTTP answer too and gets the same headers.

    Every answer without its own Cache-Control gets `no-store`: pages carry the CSRF
    token and API answers carry enrollment codes, agent tokens and fleet state, none of
    which a browser or proxy cache should keep. Static files keep their caching.
    """

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app, self.hsts = app, hsts

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            nonce = secrets.token_urlsafe(18)
            scope.setdefault("state", {})["csp_nonce"] = nonce
            return self.app(scope, receive, self._adding_to(scope, send, nonce))
        if scope["type"] == "websocket":
            # No page to render: the nonce is made only if the handshake is refused.
            return self.app(scope, receive, self._adding_to(scope, send, None))
        return self.app(scope, receive, send)

    def _adding_to(self, scope: Scope, send: Send, nonce: str | None) -> Send:
        async def with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message["headers"] = self._headers(scope, message, nonce)
            await send(message)

        return with_headers

    def _headers(
        self, scope: Scope, start: Message, nonce: str | None
    ) -> list[tuple[bytes, bytes]]:
        headers = [*start.get("headers", []), *_hardening(nonce or secrets.token_urlsafe(18))]
        if self.hsts and is_https(scope):
            headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        cacheable = scope["path"].startswith("/static/")
        if not cacheable and not any(k.lower() == b"cache-control" for k, _ in headers):
            headers.append((b"cache-control", b"no-store"))
        return headers


def _hardening(nonce: str) -> list[tuple[bytes, bytes]]:
    csp = (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        # same-origin, not no-referrer: with no-referrer Chromium sends `Origin: null` on
        # our own form posts, which the origin check must (and does) refuse.
        (b"referrer-policy", b"same-origin"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"permissions-policy", _PERMISSIONS),
    ]


class AllowedHosts:
    """Refuse a request whose Host header names a host this dashboard does not serve.

    DNS rebinding: a page on evil.example re-points its name at 127.0.0.1 and talks to a
    loopback dashboard as "evil.example". Allowed: IP literals (rebinding needs a name),
    localhost, the names in NIXFLEET_ALLOWED_HOSTS (`*` allows any). Agents pass the same
    check. Answered 421 (Misdirected Request) before anything else runs.
    """

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app, self.names = app, names

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] not in ("http", "websocket") or "*" in self.names:
            return self.app(scope, receive, send)
        host = ""
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        if host_allowed(host, self.names):
            return self.app(scope, receive, send)
        return _misdirected(scope, receive, send)


async def _misdirected(scope: Scope, receive: Receive, send: Send) -> None:
    detail = "this dashboard does not answer to that host name (NIXFLEET_ALLOWED_HOSTS)"
    if scope["type"] == "http":
        await send_error(send, 421, "misdirected", detail)
        return
    await receive()  # websocket.connect
    await send_error(send, 421, "misdirected", detail, kind="websocket.http")


def host_allowed(host: str, names: frozenset[str]) -> bool:
    """Return whether a Host header value (name or address, optional port) is allowed."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    name = name.rstrip(".")
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name in ("localhost", *names) or name.endswith(".localhost")
