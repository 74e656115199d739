"""Map every error to `{"error": code, "detail": text}` with a 4xx status; never a traceback.

Routes raise and the handlers below answer; pure-ASGI middleware, which answers before any
route, sends the same shape with `send_error`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Send

from nixfleet.core.errors import NixFleetError


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


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


def _describe(exc: RequestValidationError) -> tuple[int, str, str]:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return 400, "malformed_json", "request body is not valid JSON"
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    where = f"{loc}: " if loc else ""
    return 422, "invalid", f"{where}{first.get('msg', 'invalid request')}"


def install(app: FastAPI) -> None:
    @app.exception_handler(NixFleetError)
    async def _domain(_: Request, exc: NixFleetError) -> JSONResponse:
        return error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*_describe(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
        }.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail))

    # Unhandled exceptions: middleware.CatchAll (a generic 500 with a request id).
