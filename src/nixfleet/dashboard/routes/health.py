"""Liveness and database reachability, without secrets or versions."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from nixfleet.dashboard.deps import Ctx

router = APIRouter()


@router.get("/health")
async def health(ctx: Ctx) -> JSONResponse:
    try:
        async with ctx.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"status": "degraded", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})
