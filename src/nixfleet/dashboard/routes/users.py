"""Users: the admin page, list, add (a TOTP secret is shown once), change role, disable."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from nixfleet.core.roles import Role
from nixfleet.dashboard import accounts, contract
from nixfleet.dashboard.deps import CsrfSession, Ctx, CurrentSession, client_address
from nixfleet.dashboard.replies import OneUser, UserAdded, UserList
from nixfleet.dashboard.routetable import RouteTable
from nixfleet.security import totp
from nixfleet.storage import users as user_store

router = RouteTable()
_ROLE = Field(pattern="^(viewer|operator|admin)$")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(max_length=63)
    password: str = Field(max_length=1024)
    role: str = _ROLE
    totp: bool = False


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str | None = Field(None, pattern="^(viewer|operator|admin)$")
    disabled: bool | None = None
    password: str | None = Field(None, max_length=1024)


@router.get("/users", responses=contract.page(200))
async def users_page(request: Request, ctx: Ctx, session: CurrentSession) -> Response:
    return ctx.templates.TemplateResponse(
        request, "users.html", {"csrf": session.csrf, "user": session.username}
    )


@router.get("/api/users", responses=contract.reply(UserList))
async def list_users(ctx: Ctx, _: CurrentSession) -> dict[str, Any]:
    return {"users": [u.public() for u in await user_store.list_all(ctx.db)]}


@router.post(
    "/api/users", status_code=201, responses=contract.reply(UserAdded, 201) | contract.errors(409)
)
async def add_user(body: NewUser, request: Request, ctx: Ctx, session: CsrfSession) -> JSONResponse:
    user, secret = await accounts.add(
        ctx,
        session.username,
        client_address(request),
        body.username,
        body.password,
        Role.parse(body.role),
        body.totp,
    )
    shown: dict[str, Any] = {"user": user.public()}
    if secret:
        shown["totp_secret"] = secret
        shown["totp_uri"] = totp.provisioning_uri(secret, user.username)
    # Shown once: no cache may keep the TOTP secret.
    return JSONResponse(shown, status_code=201, headers={"Cache-Control": "no-store"})


@router.patch("/api/users/{username}", responses=contract.reply(OneUser) | contract.errors(409))
async def change_user(
    username: str, body: UserChange, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    user = await accounts.change(
        ctx,
        session.username,
        client_address(request),
        username[:63],
        role=Role.parse(body.role) if body.role else None,
        disabled=body.disabled,
        password=body.password,
    )
    return {"user": user.public()}
