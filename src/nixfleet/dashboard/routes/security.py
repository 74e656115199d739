"""The security panel (page, live fragment) and its data as JSON."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx, CurrentSession, Session, optional_session
from nixfleet.dashboard.monitoring import panel as security_panel
from nixfleet.dashboard.replies import SecuritySummary
from nixfleet.dashboard.routetable import RouteTable

router = RouteTable()


def _fmt(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "—"


@router.get("/security", responses=contract.page(200))
async def security_page(
    request: Request, ctx: Ctx, session: Annotated[Session | None, Depends(optional_session)]
) -> Response:
    if session is None:
        return RedirectResponse("/login", status_code=303)
    data = await security_panel.summary(ctx)
    return ctx.templates.TemplateResponse(
        request,
        "security.html",
        {"csrf": session.csrf, "user": session.username, "s": data, "fmt": _fmt},
    )


@router.get("/security/panel", responses=contract.page(200))
async def security_fragment(request: Request, ctx: Ctx, _: CurrentSession) -> Response:
    """Return the panel's HTML alone; the page swaps it in when a security event arrives."""
    data = await security_panel.summary(ctx)
    return ctx.templates.TemplateResponse(
        request,
        "_security_panel.html",
        {"s": data, "fmt": _fmt},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/api/security/summary", responses=contract.reply(SecuritySummary))
async def security_summary(ctx: Ctx, _: CurrentSession) -> dict[str, Any]:
    data = await security_panel.summary(ctx)
    data.pop("chart")
    return data
