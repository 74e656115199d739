"""The dashboard's pages; everything on them is filled in live over /api/events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from nixfleet.core.errors import NixFleetError
from nixfleet.core.hostid import canonical_host_id
from nixfleet.dashboard.deps import Ctx, Session, optional_session
from nixfleet.storage import hosts as host_store

router = APIRouter()


@router.get("/")
async def index(
    request: Request, ctx: Ctx, session: Annotated[Session | None, Depends(optional_session)]
) -> Response:
    if session is None:
        return RedirectResponse("/login", status_code=303)
    return ctx.templates.TemplateResponse(
        request, "index.html", {"csrf": session.csrf, "user": session.username}
    )


@router.get("/hosts/{host_id}")
async def host_page(
    host_id: str,
    request: Request,
    ctx: Ctx,
    session: Annotated[Session | None, Depends(optional_session)],
) -> Response:
    if session is None:
        return RedirectResponse("/login", status_code=303)
    try:
        host = await host_store.get(ctx.db, canonical_host_id(host_id))
    except NixFleetError:
        return ctx.templates.TemplateResponse(
            request,
            "no_host.html",
            {"csrf": session.csrf, "user": session.username, "host_id": host_id[:63]},
            status_code=404,
        )
    return ctx.templates.TemplateResponse(
        request, "host.html", {"csrf": session.csrf, "user": session.username, "host": host}
    )
