"""The browsers' live stream (Server-Sent Events)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from nixfleet.core.errors import for_people
from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx, CurrentSession, client_address, still_live

router = APIRouter()
# A browser that gave up because it had too many streams tries again after this long.
RETRY_STREAM_S = 30


def _last_event_id(request: Request) -> int | None:
    """Return the id the browser saw last (header, or ?last_event_id=), or None."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        return int(raw) if raw else None
    except ValueError:
        return None  # not one of our ids: start over with a snapshot


@router.get("/api/events", response_model=None, responses=contract.body("text/event-stream"))
async def events(
    request: Request, ctx: Ctx, session: CurrentSession
) -> StreamingResponse | JSONResponse:
    address = client_address(request)
    seat, refusal = await ctx.broadcaster.admit(session.id_hash, address)
    if refusal:
        ctx.security.emit(
            SecurityEvent(
                EventKind.RATE_LIMITED, address=address, user=session.username, detail="streams"
            )
        )
        return JSONResponse(
            {"error": "rate_limited", "detail": for_people(refusal)},
            status_code=429,
            headers={"Retry-After": str(RETRY_STREAM_S)},
        )

    # Present under `nixfleet serve` (dashboard/server.py): cuts a stalled stream's connection.
    abort = (request.scope.get("extensions") or {}).get("nixfleet.abort")

    async def still_valid() -> bool:
        return await still_live(ctx, session)

    return StreamingResponse(
        ctx.broadcaster.stream(
            session.id_hash,
            ctx.fleet.snapshot,
            still_valid,
            address=address,
            last_event_id=_last_event_id(request),
            abort=abort,
            seat=seat,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
