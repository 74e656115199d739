"""Hosts: list, add (the agent token is shown once), remove, rotate the agent token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.dashboard.deps import CsrfSession, Ctx, Session, client_address

router = APIRouter(prefix="/api/hosts")


class NewHost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Only a size cap here: core.hostid's rule decides, so API and UI show its message.
    host_id: str = Field(max_length=255)
    location: str = Field("", max_length=200)
    device_type: str = Field("", max_length=40)
    theme_color: str = Field("", pattern=r"^(#[0-9a-fA-F]{6})?$")


def _note(request: Request, ctx: Ctx, session: Session, kind: EventKind, host_id: str) -> None:
    ctx.security.emit(
        SecurityEvent(
            kind,
            outcome="ok",
            address=client_address(request),
            user=session.username,
            host=host_id,
        )
    )


@router.get("")
async def list_hosts(ctx: Ctx, _: CsrfSession) -> dict[str, Any]:
    return {"hosts": await ctx.fleet.hosts(), "target": ctx.fleet.target}


@router.post("", status_code=201)
async def add_host(
    body: NewHost, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    host, token = await ctx.fleet.add_host(body.host_id, body.model_dump(exclude={"host_id"}))
    _note(request, ctx, session, EventKind.HOST_ADDED, host["id"])
    return {"host": host, "agent_token": token}


@router.delete("/{host_id}")
async def remove_host(
    host_id: str, request: Request, ctx: Ctx, session: CsrfSession
) -> JSONResponse:
    await ctx.fleet.remove_host(host_id)
    _note(request, ctx, session, EventKind.HOST_REMOVED, host_id)
    return JSONResponse({"removed": host_id})


@router.post("/{host_id}/agent-token")
async def rotate_agent_token(
    host_id: str, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    token = await ctx.fleet.rotate_token(host_id)
    _note(request, ctx, session, EventKind.TOKEN_ROTATED, host_id)
    return {"host_id": host_id, "agent_token": token}
