"""The dashboard page; everything on it is filled in live over /api/events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from nixfleet.dashboard.deps import Ctx, Session, optional_session

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
