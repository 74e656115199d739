"""Map every error to `{"error": code, "detail": text}` with a 4xx status; never a traceback.

Routes raise and the handlers below answer; pure-ASGI middleware, which answers before any
route, sends the same shape with `send_error`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.routing import compile_path
from starlette.types import Receive, Scope, Send

from nixfleet.core.errors import NixFleetError, Unavailable, for_people
from nixfleet.storage.db import failure_reason

log = logging.getLogger("nixfleet.errors")
# A database busy past its timeout, or full: the same request can succeed later.
DB_RETRY_AFTER_S = 5


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@functools.cache
def _pattern(template: str) -> re.Pattern[str]:
    return compile_path(template)[0]


def _allowed_methods(request: Request) -> str:
    """Return the methods the resource at this path accepts (for a 405's Allow header).

    1. Of the app's routes (`app.state.route_keys`, "METHOD /path/{param}"), take those
       whose template matches the path.
    2. The template with the fewest parameters names the resource: /api/commands/bulk is
       not the command "bulk" of /api/commands/{command_id}.
    """
    found: dict[str, set[str]] = {}
    for key in getattr(request.app.state, "route_keys", ()):
        method, _, template = key.partition(" ")
        if method in _METHODS and _pattern(template).match(request.scope["path"]):
            found.setdefault(template, set()).add(method)
    if not found:
        return ""
    resource = min(found, key=lambda template: template.count("{"))
    return ", ".join(m for m in _METHODS if m in found[resource])


DatabaseError = OperationalError | PoolTimeout
DATABASE_ERRORS = (OperationalError, PoolTimeout)  # for `except`, which takes no union
# SQLSTATEs of a PostgreSQL out of reach: the connection-exception class (08) and a server
# shutting down, crashed or still starting (57P01-57P03).
_UNREACHABLE_STATES = ("08", "57P01", "57P02", "57P03")


def _unreachable(exc: OperationalError) -> bool:
    """Return whether exc says the database server cannot be reached (not that it refused)."""
    if exc.connection_invalidated:
        return True
    # psycopg's errors carry a SQLSTATE, None when the failure was on the client's side (a
    # refused or broken connection); sqlite3's have no such attribute.
    state = getattr(exc.orig, "sqlstate", "")
    return state is None or str(state).startswith(_UNREACHABLE_STATES)


def database_trouble(exc: DatabaseError) -> tuple[str, str] | None:
    """Return (code, detail) when the database is busy or full, None for anything else.

    A pool whose wait ran out (every connection busy under a flood of agents reconnecting)
    is the database being busy too: the weather, not a bug for a 500.
    """
    if isinstance(exc, PoolTimeout):
        return "database_busy", (
            "the dashboard is too busy to reach its database; nothing was changed, "
            "try again shortly"
        )
    if _unreachable(exc):
        # PostgreSQL restarting or the network down: the pool connects again on a later
        # checkout by itself, so this request failing is the weather too.
        return "database_unavailable", (
            "the dashboard cannot reach its database; nothing was changed, try again shortly"
        )
    text = str(exc.orig).lower()
    if "full" in text or "no space" in text:
        return "storage_full", "the database cannot be written (disk full); nothing was changed"
    if "locked" in text or "busy" in text or "lock timeout" in text:
        return "database_busy", "the database is busy; nothing was changed, try again shortly"
    return None


async def send_error(
    send: Send,
    status: int,
    code: str,
    detail: str,
    *,
    fields: dict[str, str] | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    kind: str = "http",
) -> None:
    """Send `{"error": code, "detail": detail, **fields}` as a whole response from middleware.

    kind is "http", or "websocket.http" to refuse a WebSocket upgrade with an HTTP answer.
    """
    body = json.dumps({"error": code, "detail": detail, **(fields or {})}).encode()
    start = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    await send({"type": f"{kind}.response.start", "status": status, "headers": start})
    await send({"type": f"{kind}.response.body", "body": body})


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _describe(exc: RequestValidationError, content_type: str) -> tuple[int, str, str]:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return 400, "malformed_json", "request body is not valid JSON"
    # FastAPI reads a JSON body only when it is labelled JSON; anything else reaches the
    # model as raw bytes and fails with "not an object", which says nothing useful.
    whole_body = tuple(first.get("loc", ())) == ("body",) and first.get("type") != "missing"
    if whole_body and not _is_json(content_type):
        return 415, "unsupported_media_type", "Send the request body as application/json."
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    where = f"{loc}: " if loc else ""
    return 422, "invalid", f"{where}{first.get('msg', 'invalid request')}"


def domain_answer(exc: NixFleetError) -> JSONResponse:
    """Return the answer to a refusal of our own (NixFleetError), for people to read."""
    log.info("refused (%s): %r", exc.code, str(exc))
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
    return error_response(exc.status, exc.code, for_people(str(exc)), headers)


def database_answer(conn: HTTPConnection, exc: DatabaseError) -> JSONResponse | None:
    """Return a 503 with Retry-After for a busy or full database; None for anything else."""
    trouble = database_trouble(exc)
    if trouble is None:
        return None  # a bug, not the weather: CatchAll's generic 500
    code, detail = trouble
    if code == "storage_full":
        conn.app.state.storage_full_at = time.monotonic()  # for /health
    # An agent's handshake lands here too, as a WebSocket (no method): 503 all the same.
    method = conn.scope.get("method", "WEBSOCKET")
    log.warning("dashboard: %s %s answered 503: %s", method, conn.url.path, failure_reason(exc))
    return error_response(503, code, detail, {"Retry-After": str(DB_RETRY_AFTER_S)})


async def send_database_answer(scope: Scope, receive: Receive, send: Send, exc: Exception) -> bool:
    """Send the 503 for a busy database from middleware; False when exc is something else.

    For what fails before any route's handler can answer: the rate limiter's shared
    counters (storage/ratecounts.py) are a database write on every request.
    """
    if not isinstance(exc, DATABASE_ERRORS):
        return False
    answer = database_answer(HTTPConnection(scope), exc)
    if answer is None:
        return False
    await answer(scope, receive, send)
    return True


def install(app: FastAPI) -> None:
    @app.exception_handler(NixFleetError)
    async def _domain(_: Request, exc: NixFleetError) -> JSONResponse:
        return domain_answer(exc)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: DatabaseError) -> JSONResponse:
        answer = database_answer(request, exc)
        if answer is None:
            raise exc
        return answer

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*_describe(exc, request.headers.get("content-type", "")))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
        }.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return error_response(exc.status_code, code, for_people(str(exc.detail)), headers)

    # Unhandled exceptions: middleware.CatchAll (a generic 500 with a request id).
