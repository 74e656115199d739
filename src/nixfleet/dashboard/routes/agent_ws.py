"""The agents' WebSocket: authenticate, reconcile, then store what the agent reports."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from nixfleet.core.errors import NotFound
from nixfleet.core.protocol import (
    CLOSE_BAD_MESSAGE,
    CLOSE_PROTOCOL_TOO_OLD,
    CLOSE_REPLACED,
    MIN_PROTOCOL_VERSION,
    Ack,
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
from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.deps import client_address
from nixfleet.dashboard.hub import AgentLink

router = APIRouter()
log = logging.getLogger("nixfleet.agent_ws")
HELLO_TIMEOUT_S = 10


def _bearer(value: str | None) -> str:
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@router.websocket("/api/agent/ws")
async def agent_socket(websocket: WebSocket) -> None:
    ctx: Context = websocket.app.state.ctx
    claimed = websocket.headers.get("x-nixfleet-host", "")
    host_id = await ctx.fleet.authenticate_agent(
        claimed, _bearer(websocket.headers.get("authorization"))
    )
    if host_id is None:
        ctx.security.emit(
            SecurityEvent(
                EventKind.AUTH_FAILURE,
                address=client_address(websocket),
                host=claimed[:63],
                detail=AuthFactor.AGENT_TOKEN,
            )
        )
        await websocket.send_denial_response(
            JSONResponse(
                {"error": "unauthorized", "detail": "bad agent token for this host"},
                status_code=401,
            )
        )
        return
    await websocket.accept()
    try:
        hello = await _hello(websocket, host_id)
    except WebSocketDisconnect:
        return
    if hello is None:
        return
    link = AgentLink(host_id, websocket)
    old = ctx.hub.attach(link)
    if old is not None:
        await _quiet_close(old, CLOSE_REPLACED, "a newer connection for this host arrived")
    try:
        await ctx.fleet.agent_connected(host_id, hello)
        await link.send(
            Welcome(
                heartbeat_s=ctx.settings.heartbeat_s, branch=ctx.settings.config_branch
            ).model_dump_json()
        )
        # Not cancelled on disconnect: a pump cut between claim and send would strand the
        # command; left alone, it notices the dead link and puts the command back.
        ctx.hub.spawn(ctx.hub.pump(host_id))
        await _serve(ctx, link)
    except (WebSocketDisconnect, NotFound):
        pass
    finally:
        if ctx.hub.detach(link):
            await ctx.fleet.agent_disconnected(host_id)


async def _hello(websocket: WebSocket, host_id: str) -> Hello | None:
    try:
        raw = await asyncio.wait_for(websocket.receive_text(), HELLO_TIMEOUT_S)
        msg = agent_message.validate_json(raw)
    except (TimeoutError, ValidationError):
        await websocket.close(CLOSE_BAD_MESSAGE, "expected a hello message")
        return None
    if not isinstance(msg, Hello) or msg.host_id != host_id:
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
    fleet, host_id = ctx.fleet, link.host_id
    while True:
        raw = await link.ws.receive_text()
        try:
            msg = agent_message.validate_json(raw)
        except ValidationError as exc:
            log.warning(
                "agent_ws: %s sent a malformed message (%s)", host_id, exc.errors()[0]["type"]
            )
            await link.ws.close(CLOSE_BAD_MESSAGE, "malformed message")
            return
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
                await link.send(
                    Ack(command_id=msg.command_id, seq=2**31, final=True).model_dump_json()
                )
                continue
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


async def _quiet_close(link: AgentLink, code: int, reason: str) -> None:
    try:
        await link.ws.close(code, reason)
    except Exception:
        log.debug("agent_ws: old link for %s already closed", link.host_id)
