"""The access log and request ids (pure ASGI, outermost, so it sees every answer).

Each request gets an id: the one a trusted proxy sent in X-Request-ID (so proxy and
dashboard logs join up), else a fresh one. It is returned in X-Request-ID and kept in
scope["state"]["request_id"] for error logs. One line per request (a WebSocket or an
event stream: when it ends) with the real client address, the user or host when known,
method, path without the query string, status and duration. Headers, cookies, tokens and
bodies are never logged.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nixfleet.dashboard.deps import request_origin

log = logging.getLogger("nixfleet.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def _incoming_id(scope: Scope) -> str:
    """Return the X-Request-ID a trusted proxy sent, or ""."""
    if not request_origin(scope).via_proxy:
        return ""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.match(text) else ""
    return ""


def format_fields(fields: dict[str, Any]) -> str:
    """Return fields as `key=value` pairs; values with spaces or quotes are quoted."""
    parts = []
    for key, value in fields.items():
        text = "-" if value is None or value == "" else str(value)
        if any(c in text for c in ' "=') or not text.isprintable():
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class AccessLog:
    def __init__(self, app: ASGIApp, enabled: bool) -> None:
        self.app, self.enabled = app, enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = _incoming_id(scope) or secrets.token_hex(8)
        state["request_id"] = request_id
        started = time.monotonic()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            elif kind == "websocket.accept":
                status = 101
            elif kind == "websocket.close" and status == 0:
                status = 403  # closed before the upgrade: the server answers 403
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.enabled:
                self._log(scope, status or 500, time.monotonic() - started)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        state = scope["state"]
        fields = {
            "request_id": state["request_id"],
            "address": request_origin(scope).address,
            "method": scope.get("method", "WS"),
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "user": state.get("user", ""),
            "host": state.get("host", ""),
        }
        log.info("access %s", format_fields(fields), extra={"fields": fields})
