"""The dashboard's pages; everything on them is filled in live over /api/events."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from nixfleet.core.errors import NixFleetError
from nixfleet.core.hostid import canonical_host_id
from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx, Session, optional_session
from nixfleet.dashboard.routetable import RouteTable
from nixfleet.storage import hosts as host_store

router = RouteTable()


@router.get("/", responses=contract.page(200))
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


@router.get("/hosts/{host_id}", responses=contract.page(200, 404))
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


def public_repo_url(url: str) -> str:
    """Return the config repo's URL for the "Add a host" snippet, without credentials.

    An https://user:token@host/… URL would show its token on the page; ssh's git@host:…
    names a user only and stays.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
