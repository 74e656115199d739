"""The dashboard page; everything on it is filled in live over /api/events."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

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
        request,
        "index.html",
        {
            "csrf": session.csrf,
            "user": session.username,
            "config_repo": public_repo_url(ctx.settings.config_repo),
        },
    )


def public_repo_url(url: str) -> str:
    """Return the config repo's URL for the "Add a host" snippet, without credentials.

    An https://user:token@host/… URL would show its token on the page; ssh's git@host:…
    names a user only and stays.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
