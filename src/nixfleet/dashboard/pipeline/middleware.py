"""Pure ASGI middleware (BaseHTTPMiddleware breaks streaming responses such as SSE)."""

from __future__ import annotations

import logging
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nixfleet.dashboard.deps import is_https
from nixfleet.dashboard.pipeline.errors import send_error

log = logging.getLogger("nixfleet.dashboard")


class CatchAll:
    """Give each request an id; turn an unhandled exception into a generic 500 naming it.

    The traceback goes to the log with the id, never to the client. Sits inside
    SecurityHeaders, so the 500 carries the same headers as every other response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
        except Exception:
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
    a trusted proxy): browsers ignore it over plain HTTP anyway.
    """

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app, self.hsts = app, hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        csp = (
            f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; "
            "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        extra = [
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
        if self.hsts and is_https(scope):
            extra.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
