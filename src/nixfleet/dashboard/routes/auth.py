"""Login and logout for the single admin user."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent
from nixfleet.dashboard.deps import SESSION_COOKIE, CsrfSession, Ctx, client_address
from nixfleet.security import passwords, tokens
from nixfleet.storage import sessions as session_store

router = APIRouter()


@router.get("/login")
async def login_page(request: Request, ctx: Ctx) -> Response:
    return ctx.templates.TemplateResponse(request, "login.html", {"error": ""})


@router.post("/login")
async def login(
    request: Request,
    ctx: Ctx,
    username: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    settings = ctx.settings
    known = hmac.compare_digest(username.encode(), settings.admin_user.encode())
    stored = settings.admin_password_hash.get_secret_value() if known else None
    # argon2 takes ~0.1 s of CPU: off the event loop, or every login stalls every agent.
    address = client_address(request)
    if not await asyncio.to_thread(passwords.verify_password, stored, password):
        ctx.security.emit(
            SecurityEvent(
                EventKind.AUTH_FAILURE, address=address, user=username, detail=AuthFactor.PASSWORD
            )
        )
        return ctx.templates.TemplateResponse(
            request, "login.html", {"error": "Wrong user name or password."}, status_code=401
        )
    session_id = tokens.new_session_id()  # always a fresh id: no session fixation
    ctx.security.emit(SecurityEvent(EventKind.LOGIN, outcome="ok", address=address, user=username))
    await session_store.create(
        ctx.db,
        tokens.hash_session_id(session_id),
        username,
        tokens.new_csrf_token(),
        time.time(),
        address,
    )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/",
        max_age=settings.session_absolute_s,
    )
    return response


@router.post("/logout")
async def logout(request: Request, ctx: Ctx, session: CsrfSession) -> Response:
    ctx.security.emit(
        SecurityEvent(
            EventKind.LOGOUT,
            outcome="ok",
            address=client_address(request),
            user=session.username,
        )
    )
    await session_store.delete_one(ctx.db, session.id_hash)
    await ctx.bus.publish({"type": "session_ended", "id_hash": session.id_hash})
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
