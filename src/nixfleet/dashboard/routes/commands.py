"""Commands: per host, in bulk, their state and output, and cancelling queued ones."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nixfleet.dashboard.deps import CsrfSession, Ctx

router = APIRouter(prefix="/api")


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str = Field(max_length=40)


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str = Field(max_length=40)
    host_ids: list[str] = Field(min_length=1, max_length=10000)


@router.post("/hosts/{host_id}/command", status_code=202)
async def queue_command(
    host_id: str, body: CommandRequest, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    cmd = await ctx.fleet.dispatch(session.username, host_id, body.command)
    return {"command_id": cmd["id"], "state": cmd["state"]}


@router.post("/commands/bulk", status_code=202)
async def queue_bulk(body: BulkRequest, ctx: Ctx, session: CsrfSession) -> dict[str, Any]:
    """Give each host its own command: one bad or offline host never fails the rest."""
    return {"results": await ctx.fleet.dispatch_many(session.username, body.host_ids, body.command)}


@router.get("/hosts/{host_id}/commands")
async def host_commands(
    host_id: str, ctx: Ctx, _: CsrfSession, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    return {"commands": await ctx.fleet.host_commands(host_id, limit)}


@router.get("/commands/{command_id}")
async def get_command(command_id: str, ctx: Ctx, _: CsrfSession) -> dict[str, Any]:
    return await ctx.fleet.command_with_output(command_id)


@router.post("/commands/{command_id}/cancel")
async def cancel_command(command_id: str, ctx: Ctx, _: CsrfSession) -> JSONResponse:
    cmd = await ctx.fleet.cancel_queued(command_id)
    return JSONResponse({"command_id": cmd["id"], "state": cmd["state"]})
