"""Hosts: list, add (the agent token is shown once), remove, rotate the agent token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nixfleet.dashboard.deps import CsrfSession, Ctx

router = APIRouter(prefix="/api/hosts")


class NewHost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host_id: str = Field(min_length=1, max_length=63)
    location: str = Field("", max_length=200)
    device_type: str = Field("", max_length=40)
    theme_color: str = Field("", pattern=r"^(#[0-9a-fA-F]{6})?$")


@router.get("")
async def list_hosts(ctx: Ctx, _: CsrfSession) -> dict[str, Any]:
    return {"hosts": await ctx.fleet.hosts(), "target": ctx.fleet.target}


@router.post("", status_code=201)
async def add_host(body: NewHost, ctx: Ctx, _: CsrfSession) -> dict[str, Any]:
    host, token = await ctx.fleet.add_host(body.host_id, body.model_dump(exclude={"host_id"}))
    return {"host": host, "agent_token": token}


@router.delete("/{host_id}")
async def remove_host(host_id: str, ctx: Ctx, _: CsrfSession) -> JSONResponse:
    await ctx.fleet.remove_host(host_id)
    return JSONResponse({"removed": host_id})


@router.post("/{host_id}/agent-token")
async def rotate_agent_token(host_id: str, ctx: Ctx, _: CsrfSession) -> dict[str, Any]:
    return {"host_id": host_id, "agent_token": await ctx.fleet.rotate_token(host_id)}
