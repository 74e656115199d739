"""The browsers' live stream (Server-Sent Events)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from nixfleet.core.errors import for_people
from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx, CurrentSession, client_address, still_live
from nixfleet.dashboard.routetable import RouteTable
from nixfleet.storage.db import failure_reason, is_transient

log = logging.getLogger("nixfleet.events")

router = RouteTable()
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
        try:
            return await still_live(ctx, session)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The database out of reach (PostgreSQL restarting): nobody can end the session
            # meanwhile either, so the open stream goes on and asks again at the next
            # keep-alive. Closing it would leave the page without live updates: a browser
            # does not retry an event stream that was answered 503.
            log.warning("events: a session check was postponed: %s", failure_reason(exc))
            return True

    return StreamingResponse(
        _ended_quietly_by_an_outage(
            ctx.broadcaster.stream(
                session.id_hash,
                ctx.fleet.snapshot,
                still_valid,
                address=address,
                last_event_id=_last_event_id(request),
                abort=abort,
                seat=seat,
            )
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _ended_quietly_by_an_outage(
    frames: AsyncGenerator[str, None],
) -> AsyncIterator[str]:
    """Relay frames; end the stream, not the connection with a traceback, when a snapshot
    finds the database out of reach. The answer had begun (200), so the browser's
    EventSource opens a new stream by itself after the `retry:` the stream began with."""
    async with contextlib.aclosing(frames):
        try:
            async for frame in frames:
                yield frame
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("events: a stream ended early: %s", failure_reason(exc))
