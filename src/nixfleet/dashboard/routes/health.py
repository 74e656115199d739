"""Liveness and database health (reachable, and writable), without secrets or versions."""

from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx
from nixfleet.dashboard.replies import Health
from nixfleet.dashboard.routetable import RouteTable

router = RouteTable()
# Below this much free space SQLite's next WAL growth or checkpoint can fail.
MIN_FREE_BYTES = 1 << 20
# A write refused for want of space counts this long (PostgreSQL's disk is not ours to see).
FULL_MEMORY_S = 10.0


def _not_writable(request: Request, ctx: Ctx) -> str:
    """Return why the database cannot take writes now, or ""."""
    free = ctx.db.free_bytes()
    if free is not None and free < MIN_FREE_BYTES:
        return f"the disk holding the database has {free // 1024} KiB left"
    full_at = getattr(request.app.state, "storage_full_at", None)
    if free is None and full_at is not None and time.monotonic() - full_at < FULL_MEMORY_S:
        return "the database refused a write for want of space"
    return ""


@router.get("/health", responses=contract.reply(Health) | contract.reply(Health, 503))
async def health(request: Request, ctx: Ctx) -> JSONResponse:
    try:
        async with ctx.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"status": "degraded", "database": "unreachable"}, status_code=503)
    problem = _not_writable(request, ctx)
    if problem:
        return JSONResponse(
            {"status": "degraded", "database": "not writable", "detail": problem},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "database": "ok"})
