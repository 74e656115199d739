"""The agents' WebSocket: authenticate, reconcile, then store what the agent reports.

It is served ahead of FastAPI's router (`ServeAgentsFirst`, the innermost middleware of
app.py), not as a route: FastAPI keeps what it made to route and call an endpoint (the
match, the solved dependencies, two exit stacks, the exception wrapper, their coroutine
frames) alive as long as the endpoint runs, which for an agent is as long as it is
connected: about 12 KiB for each of thousands of agents (docs/benchmarks.md, issue 20).
This endpoint needs none of it: it authenticates its caller itself, as access.NEEDS says
of the routes marked public, and it answers the errors its handshake can meet the way
pipeline/errors.install answers them for the routes. Every middleware still runs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from nixfleet.core.errors import NixFleetError, NotFound
from nixfleet.core.framing import (
    CLOSE_BAD_MESSAGE,
    CLOSE_PROTOCOL_TOO_OLD,
    CLOSE_REPLACED,
    MIN_PROTOCOL_VERSION,
)
from nixfleet.core.protocol import (
    Ack,
    AgentMessage,
    Credential,
    CredentialSaved,
    Finished,
    Hello,
    Output,
    Started,
    Status,
    StatusAck,
    Warning,
    Welcome,
    agent_message,
)
from nixfleet.core.secevents import AuthFactor, EventKind, MessageFault, SecurityEvent
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.deps import client_address
from nixfleet.dashboard.fleet.hub import AgentLink
from nixfleet.dashboard.fleet.identity import AgentAuth
from nixfleet.dashboard.pipeline import errors
from nixfleet.dashboard.pipeline.tlspeer import client_cert_sha256
from nixfleet.storage.db import failure_reason

log = logging.getLogger("nixfleet.agent_ws")
PATH = "/api/agent/ws"
HELLO_TIMEOUT_S = 10
# How long a message waits for a busy or full database before the agent is asked to retry.
DB_RETRY_WINDOW_S = 60.0
# RFC 6455 "Try Again Later".
CLOSE_TRY_AGAIN = 1013
# uvicorn closes a frame above MAX_MESSAGE_BYTES with this code before the app sees it.
CLOSE_TOO_BIG = 1009


def _bearer(value: str | None) -> str:
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class ServeAgentsFirst:
    """Send the agents' WebSocket to `serve`, everything else on to FastAPI's router."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async: it hands on the next coroutine without a frame of its own, which
        # would live as long as the connection.
        if scope["type"] == "websocket" and scope["path"] == PATH:
            return serve(scope, receive, send)
        return self.app(scope, receive, send)


class AgentsPastTheFrame:
    """The app uvicorn serves: the agents' WebSocket enters at our outermost middleware,
    past FastAPI's and Starlette's own outer layers; everything else enters the app.

    Those layers (`FastAPI.__call__`, `Starlette.__call__`, the server-error, exception-
    telemetry and body-limit middleware) only pass a WebSocket on, but each keeps a
    coroutine frame for as long as it is open: 1.7 KiB for each connected agent
    (docs/benchmarks.md). What they would add is done here (the scope's `app` and
    `root_path`); FastAPI's OpenTelemetry layers see no agent socket, which NixFleet does
    not configure. Our own middleware all still runs. Until the app has built its stack
    (its lifespan does, before the first connection), or if ours cannot be found in it,
    the socket goes through the app as before.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._ours: ASGIApp | None = None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async, like ServeAgentsFirst: no frame of its own for the socket's life.
        if scope["type"] == "websocket" and scope["path"] == PATH:
            ours = self._ours or self._find_ours()
            if ours is not None:
                scope["app"] = self.app
                if self.app.root_path:
                    scope["root_path"] = self.app.root_path
                return ours(scope, receive, send)
        return self.app(scope, receive, send)

    def _find_ours(self) -> ASGIApp | None:
        """Return the app's instance of its outermost user middleware, once it is built."""
        if not self.app.user_middleware:
            return None
        outermost = self.app.user_middleware[0].cls  # the last added runs first
        layer: Any = self.app.middleware_stack
        for _ in range(16):
            if layer is None or isinstance(layer, outermost):  # type: ignore[arg-type]
                self._ours = layer
                return layer
            layer = getattr(layer, "app", None)
        return None


async def serve(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one agent's WebSocket.

    Until the handshake is answered, a busy or full database is answered 503 with
    Retry-After and a refusal of ours (NixFleetError) with its status, as on any route.
    """
    websocket = WebSocket(scope, receive, send)
    try:
        await agent_socket(websocket)
    except (NixFleetError, OperationalError, PoolTimeout) as exc:
        if websocket.application_state != WebSocketState.CONNECTING:
            await _try_again_later(websocket, exc)
            return
        answer = (
            errors.domain_answer(exc)
            if isinstance(exc, NixFleetError)
            else errors.database_answer(websocket, exc)
        )
        if answer is None:
            raise
        await answer(scope, receive, send)


async def _try_again_later(websocket: WebSocket, exc: Exception) -> None:
    """Close an accepted socket whose database is busy or full with 1013, in one log line.

    The agent reconnects after its backoff and replays what was not acknowledged; anything
    other than the database's weather is a bug and goes on to uvicorn's traceback.
    """
    if not isinstance(exc, OperationalError | PoolTimeout) or not errors.database_trouble(exc):
        raise exc
    host = getattr(websocket.state, "host", "?")
    why = failure_reason(exc)
    log.warning("agent_ws: %s: the database is unavailable (%s); told to come back", host, why)
    if websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(CLOSE_TRY_AGAIN, "the dashboard's database is busy; try again")


async def agent_socket(websocket: WebSocket) -> None:
    ctx: Context = websocket.app.state.ctx
    claimed = websocket.headers.get("x-nixfleet-host", "")
    address = client_address(websocket)
    auth = await ctx.fleet.identity.authenticate(
        claimed,
        _bearer(websocket.headers.get("authorization")),
        client_cert_sha256(websocket, ctx.settings.client_cert_header),
        address,
    )
    if auth.host_id is None:
        await _refuse(ctx, websocket, claimed[:63], address, auth)
        return
    host_id = auth.host_id
    if auth.migrate:
        log.warning(
            "agent_ws: %s from %s used the DEPRECATED shared agent token; "
            "it gets its own token now",
            host_id,
            address,
        )
        ctx.security.emit(
            SecurityEvent(
                EventKind.DEPRECATED_CREDENTIAL,
                outcome="deprecated",
                address=address,
                host=host_id,
                detail=AuthFactor.SHARED_TOKEN,
            )
        )
    websocket.state.host = host_id  # for the access log
    await websocket.accept()
    # Nothing reads the handshake's headers again (the address is resolved and kept in the
    # scope's state for the access log), and they hold the agent's token: 1.3 KiB for each
    # connected agent. Emptied in place: Starlette's Headers is a view of the same list.
    websocket.scope["headers"].clear()
    try:
        hello = await _hello(ctx, websocket, host_id)
    except WebSocketDisconnect:
        return
    if hello is None:
        return
    link = AgentLink(host_id, websocket, credential=auth.credential)
    old = ctx.hub.attach(link)
    if old is not None:
        await _quiet_close(old, CLOSE_REPLACED, "a newer connection for this host arrived")
    _report_tls_failures(ctx, websocket, hello)
    try:
        await ctx.fleet.agent_connected(host_id, hello)
        # This frame lives as long as the connection: not the parsed hello too (8 KiB a host).
        del hello
        await link.send(
            Welcome(
                heartbeat_s=ctx.settings.heartbeat_s, branch=ctx.settings.config_branch
            ).model_dump_json()
        )
        # Not cancelled on disconnect: a pump cut between claim and send would strand the
        # command; left alone, it notices the dead link and puts the command back.
        ctx.hub.spawn(ctx.hub.pump(host_id))
        if auth.migrate:
            token, link.pending_credential = ctx.fleet.identity.new_token()
            await link.send(Credential(token=token).model_dump_json())
        await _serve(ctx, link)
    except (WebSocketDisconnect, NotFound):
        pass
    finally:
        if ctx.hub.detach(link):
            await ctx.fleet.agent_disconnected(host_id)


def _report_tls_failures(ctx: Context, websocket: WebSocket, hello: Hello) -> None:
    """Emit one security event per kind of handshake failure the agent saw on its way."""
    kinds = {f.kind for f in hello.transport.tls_failures} if hello.transport else set()
    for kind in sorted(kinds):
        ctx.security.emit(
            SecurityEvent(
                EventKind.TLS_FAILURE,
                address=client_address(websocket),
                host=hello.host_id,
                detail=kind,
            )
        )


async def _refuse(
    ctx: Context, websocket: WebSocket, claimed: str, address: str, auth: AgentAuth
) -> None:
    """Count, log (never the token) and refuse a handshake with HTTP 401 or 403."""
    factor = auth.factor or AuthFactor.AGENT_TOKEN
    ctx.security.emit(
        SecurityEvent(EventKind.AUTH_FAILURE, address=address, host=claimed, detail=factor)
    )
    log.warning("agent_ws: refused %r from %s: %s (%s)", claimed, address, auth.reason, factor)
    status, detail = (
        (403, "this host needs its client certificate")
        if factor == AuthFactor.CLIENT_CERT
        else (401, "bad agent token for this host")
    )
    await websocket.send_denial_response(
        JSONResponse(
            {"error": "unauthorized" if status == 401 else "forbidden", "detail": detail},
            status_code=status,
        )
    )


async def _next_message(ctx: Context, ws: WebSocket, host_id: str) -> AgentMessage | None:
    """Return the agent's next message, or None once a bad frame got close 4400.

    Whatever the frame holds (binary, not JSON, a field out of bounds, too large for
    uvicorn), the outcome is one log line, one security event naming the host and a clean
    close, never a traceback.
    """
    event = await ws.receive()
    if event["type"] == "websocket.disconnect":
        if event.get("code") == CLOSE_TOO_BIG:
            _report_fault(ctx, ws, host_id, MessageFault.TOO_LARGE, "over the size limit")
        raise WebSocketDisconnect(event.get("code", 1000), event.get("reason"))
    text = event.get("text")
    if text is None:
        fault, why = MessageFault.BINARY, "a binary frame"
    else:
        try:
            return agent_message.validate_json(text)
        except ValidationError as exc:
            fault, why = _fault_of(exc)
    _report_fault(ctx, ws, host_id, fault, why)
    await ws.close(CLOSE_BAD_MESSAGE, f"refused: {why}"[:120])
    return None


def _fault_of(exc: ValidationError) -> tuple[MessageFault, str]:
    """Return the kind of a validation failure and words naming the first bad field."""
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return MessageFault.NOT_JSON, "not JSON"
    where = ".".join(str(part) for part in first["loc"])[:80] or "message"
    return MessageFault.INVALID, f"{where}: {first['type']}"


def _report_fault(ctx: Context, ws: WebSocket, host_id: str, fault: MessageFault, why: str) -> None:
    log.warning("agent_ws: refused a message from %s (%s): %r", host_id, fault.value, why)
    ctx.security.emit(
        SecurityEvent(
            EventKind.BAD_AGENT_MESSAGE, address=client_address(ws), host=host_id, detail=fault
        )
    )


async def _hello(ctx: Context, websocket: WebSocket, host_id: str) -> Hello | None:
    try:
        msg = await asyncio.wait_for(_next_message(ctx, websocket, host_id), HELLO_TIMEOUT_S)
    except TimeoutError:
        await websocket.close(CLOSE_BAD_MESSAGE, "expected a hello message")
        return None
    if msg is None:
        return None
    if not isinstance(msg, Hello) or msg.host_id != host_id:
        _report_fault(ctx, websocket, host_id, MessageFault.OUT_OF_ORDER, "no hello first")
        await websocket.close(CLOSE_BAD_MESSAGE, "hello must come first and name this host")
        return None
    if msg.protocol < MIN_PROTOCOL_VERSION:
        await websocket.close(
            CLOSE_PROTOCOL_TOO_OLD,
            f"protocol {msg.protocol} is too old; need {MIN_PROTOCOL_VERSION}",
        )
        return None
    return msg


async def _serve(ctx: Context, link: AgentLink) -> None:
    while True:
        msg = await _next_message(ctx, link.ws, link.host_id)
        if msg is None:
            return
        if not await _stored_in_time(link, functools.partial(_handle, ctx, link, msg)):
            await link.ws.close(CLOSE_TRY_AGAIN, "the dashboard's database is unavailable")
            return
        del msg  # handled: not kept while the next one is awaited (thousands of links)


async def _stored_in_time(link: AgentLink, handle: Callable[[], Awaitable[None]]) -> bool:
    """Return True once handle() ran; retry it while the database is busy or full.

    The socket stays open meanwhile and the agent's next messages wait in TCP, so nothing
    is acknowledged out of order. Past DB_RETRY_WINDOW_S: False (close 1013, the agent
    reconnects and replays what was not acknowledged).
    """
    delay, deadline = 0.5, time.monotonic() + DB_RETRY_WINDOW_S
    while True:
        try:
            await handle()
            return True
        except (OperationalError, PoolTimeout) as exc:
            if time.monotonic() + delay > deadline:
                return False
            log.warning(
                "agent_ws: %s: the database refused a message (%s); retry in %.1f s",
                link.host_id,
                failure_reason(exc),
                delay,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def _handle(ctx: Context, link: AgentLink, msg: object) -> None:
    fleet, host_id = ctx.fleet, link.host_id
    if isinstance(msg, Status):
        # Only an acknowledged status waits for its write; plain heartbeats share one.
        await fleet.record_status(host_id, msg.status, wait=msg.ref is not None)
        if msg.ref is not None:
            await link.send(StatusAck(ref=msg.ref).model_dump_json())
    elif isinstance(msg, Output):
        try:
            seq = await fleet.record_output(host_id, msg)
        except NotFound:
            # Not ours (or deleted with its host): let the agent drop it for good.
            await link.send(Ack(command_id=msg.command_id, seq=2**31, final=True).model_dump_json())
            return
        await link.send(Ack(command_id=msg.command_id, seq=seq).model_dump_json())
    elif isinstance(msg, Finished):
        await fleet.record_finished(host_id, msg)
        await link.send(
            Ack(command_id=msg.command_id, seq=msg.last_seq, final=True).model_dump_json()
        )
    elif isinstance(msg, Started):
        await fleet.record_started(host_id, msg)
    elif isinstance(msg, Warning):
        await fleet.record_warning(host_id, msg)
    elif isinstance(msg, CredentialSaved):
        await _commit_migration(ctx, link)


async def _quiet_close(link: AgentLink, code: int, reason: str) -> None:
    try:
        await link.ws.close(code, reason)
    except Exception:
        log.debug("agent_ws: old link for %s already closed", link.host_id)


async def _commit_migration(ctx: Context, link: AgentLink) -> None:
    """The agent saved the token we sent: from now on only that token is this host's."""
    pending = link.pending_credential
    if not pending:
        return
    link.committing = True  # the live credential check leaves the link alone meanwhile
    try:
        if not await ctx.fleet.identity.commit_migration(link.host_id, pending):
            return
        link.credential, link.pending_credential = pending, ""
    finally:
        link.committing = False
    log.info("agent_ws: %s moved from the shared token to its own", link.host_id)
    ctx.security.emit(
        SecurityEvent(
            EventKind.ENROLLED,
            outcome="ok",
            address=client_address(link.ws),
            host=link.host_id,
            detail=AuthFactor.SHARED_TOKEN,
        )
    )
    await ctx.fleet.publish_host(link.host_id)
