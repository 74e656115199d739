"""The browsers' live stream (Server-Sent Events)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from nixfleet.dashboard.deps import Ctx, CurrentSession

router = APIRouter()


@router.get("/api/events")
async def events(ctx: Ctx, _: CurrentSession) -> StreamingResponse:
    return StreamingResponse(
        ctx.broadcaster.stream(ctx.fleet.snapshot),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
