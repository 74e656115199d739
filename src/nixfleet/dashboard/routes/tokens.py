"""API tokens: the page, list (never the secret), create (the secret is shown once), revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from nixfleet.core.apitokens import DEFAULT_LIFETIME_S, canonical_name, lifetime_s, scope_from
from nixfleet.core.roles import Role
from nixfleet.dashboard import apitokens, contract
from nixfleet.dashboard.deps import CsrfSession, Ctx, CurrentSession, client_address
from nixfleet.dashboard.replies import OneToken, TokenCreated, TokenList
from nixfleet.dashboard.routetable import RouteTable

router = RouteTable()
# The kinds a token's scope may name, as the form offers them: every command kind, the
# everyday ones first, each in the words of the buttons that queue it.
KIND_CHOICES = (
    ("plan", "plan (Preview)"),
    ("pull-switch", "pull-switch (Deploy)"),
    ("switch", "switch"),
    ("pull", "pull"),
    ("test", "test"),
    ("rollback", "rollback (Roll back)"),
    ("stop", "stop"),
    ("restart", "restart (Restart agent)"),
)
_Host = Annotated[str, Field(max_length=63)]


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=40)
    role: str = Field(pattern="^(viewer|operator|admin)$")
    hosts: list[_Host] = Field(default_factory=list, max_length=1000)
    labels: str = Field("", max_length=600, description="a label selector: role=web,tier=1")
    kinds: list[Annotated[str, Field(max_length=20)]] = Field(default_factory=list, max_length=10)
    expires_in: str = Field("", max_length=8, description='e.g. "30d", "12h"; default 90 days')
    service: bool = False


@router.get("/tokens", responses=contract.page(200))
async def tokens_page(request: Request, ctx: Ctx, session: CurrentSession) -> Response:
    return ctx.templates.TemplateResponse(
        request,
        "tokens.html",
        {
            "csrf": session.csrf,
            "user": session.username,
            "is_admin": session.role >= Role.ADMIN,
            "role": session.role.label,
            "kinds": KIND_CHOICES,
        },
    )


@router.get("/api/tokens", responses=contract.reply(TokenList))
async def list_tokens(
    ctx: Ctx, session: CurrentSession, everyone: bool = Query(False, alias="all")
) -> dict[str, Any]:
    """Return the caller's tokens; `?all=true` (admins): every token, service ones too."""
    return {"tokens": [t.public() for t in await apitokens.listed(ctx, session, everyone)]}


@router.post("/api/tokens", status_code=201, responses=contract.reply(TokenCreated, 201))
async def create_token(
    body: NewToken, request: Request, ctx: Ctx, session: CsrfSession
) -> JSONResponse:
    token, secret = await apitokens.create(
        ctx,
        session,
        client_address(request),
        canonical_name(body.name),
        Role.parse(body.role),
        scope_from(body.hosts, body.labels, body.kinds),
        lifetime_s(body.expires_in) if body.expires_in else DEFAULT_LIFETIME_S,
        body.service,
    )
    # Shown once: no cache may keep it.
    return JSONResponse(
        {"token": token.public(), "secret": secret},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@router.delete("/api/tokens/{token_id}", responses=contract.reply(OneToken))
async def revoke_token(
    token_id: str, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    token = await apitokens.revoke(ctx, session, client_address(request), token_id[:16])
    return {"token": token.public()}
