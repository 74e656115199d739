"""The browsers' live stream (Server-Sent Events)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from nixfleet.dashboard.deps import Ctx, CurrentSession, live_session

router = APIRouter()


@router.get("/api/events")
async def events(ctx: Ctx, session: CurrentSession) -> StreamingResponse:
    async def still_valid() -> bool:
        return await live_session(ctx, session.id_hash) is not None

    return StreamingResponse(
        ctx.broadcaster.stream(session.id_hash, ctx.fleet.snapshot, still_valid),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
