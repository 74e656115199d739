"""Login (password, then TOTP when configured), logout, and log out everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import secrets
import time
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from nixfleet.core.errors import Forbidden, Unavailable, ValidationError
from nixfleet.core.roles import canonical_username
from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent
from nixfleet.dashboard import contract
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.deps import (
    CsrfSession,
    Ctx,
    client_address,
    from_this_origin,
    session_cookie,
)
from nixfleet.dashboard.routetable import RouteTable
from nixfleet.security import passwords, tokens, totp
from nixfleet.storage import sessions as session_store
from nixfleet.storage import totp as totp_store
from nixfleet.storage import users as user_store

router = RouteTable()
WRONG = "Wrong user name or password."
WRONG_WITH_CODE = "Wrong user name, password or code."
DEVICE_COOKIE = "nixfleet_device"
DEVICE_MAX_AGE_S = 365 * 86400
# Keys the unknown-user labels of processes without an audit key (a demo without secrets).
_PROCESS_KEY = secrets.token_bytes(32)


def user_label(ctx: Context, username: str, known: bool) -> str:
    """Return how a login's user name may be logged, stored and shown.

    A known user's name as is; any other name as a keyed hash and its length, because
    people type their password into the user-name field, and the log, the security events,
    the audit log and every open browser would otherwise show it. The same wrong name
    always gets the same label, so a guessing run is still visible as one.
    """
    if known:
        return username
    key = ctx.settings.audit_key or _PROCESS_KEY
    digest = hashlib.blake2s(username.encode(), key=key[:32], digest_size=4).hexdigest()
    return f"unknown:{digest}:{len(username)}"


def _device_cookie(ctx: Context) -> str:
    return f"__Host-{DEVICE_COOKIE}" if ctx.settings.secure_cookies else DEVICE_COOKIE


def _known_device(request: Request, ctx: Context, username: str) -> bool:
    """Return whether this browser logged in as username before (a signed device cookie)."""
    raw = request.cookies.get(_device_cookie(ctx))
    value = ctx.signer.unsign(raw) if raw else None
    return bool(value) and str(value).startswith(f"device:{username}:")


async def _wants_code(ctx: Context) -> bool:
    return ctx.settings.require_totp or await user_store.any_totp(ctx.db)


async def render_login(
    request: Request, ctx: Context, error: str = "", status: int = 200
) -> Response:
    """Return the login page: the password form (unless turned off), the SSO button."""
    settings = ctx.settings
    wants_code = settings.password_login and await _wants_code(ctx)
    return ctx.templates.TemplateResponse(
        request,
        "login.html",
        {
            "error": error,
            "wants_code": wants_code,
            "code_required": settings.require_totp,
            "password_login": settings.password_login,
            "sso_name": settings.oidc_provider_name if settings.oidc_enabled else "",
        },
        status_code=status,
    )


@router.get("/login", responses=contract.page(200))
async def login_page(request: Request, ctx: Ctx) -> Response:
    return await render_login(request, ctx)


async def _failed_factor(
    ctx: Context, user: user_store.User | None, password: str, code: str
) -> str | None:
    """Return the factor that failed (for the log only), or None when the login is good.

    1. The password, always with one argon2 verification (unknown and disabled users
       cost the same, and are refused alike).
    2. The user's TOTP code when they have a TOTP secret (a user without one is refused
       under NIXFLEET_REQUIRE_TOTP): its time step must be newer than the last one this
       account used, so a code works only once.
    """
    usable = user is not None and not user.disabled
    stored = user.password_hash if user is not None and usable else None
    # argon2 takes ~0.1 s of CPU: off the event loop, or every login stalls every agent.
    if not await asyncio.to_thread(passwords.verify_password, stored, password):
        return AuthFactor.PASSWORD
    assert user is not None
    secret = user.totp_secret
    if not secret:
        return AuthFactor.TOTP if ctx.settings.require_totp else None
    username = user.username
    step = totp.matching_step(secret, code, time.time())
    if step is None or not await totp_store.claim_step(ctx.db, username, step):
        return AuthFactor.TOTP
    return None


_HTML = {"text/html": {"schema": {"type": "string"}}}


@router.post(
    "/login",
    responses={
        **contract.redirect(),
        **contract.page(401, 429),
        # JSON from the CSRF check; the login page when password login is turned off.
        403: {**contract.errors(403)[403], "content": _HTML},
    },
)
async def login(
    request: Request,
    ctx: Ctx,
    username: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    code: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    address = client_address(request)
    user = await _find_user(ctx, username)
    label = user_label(ctx, username, user is not None)
    if not from_this_origin(request):
        # Login CSRF: another site's form must not log the browser into some account.
        ctx.security.emit(
            SecurityEvent(EventKind.CSRF_FAILURE, address=address, user=label, detail="login")
        )
        raise Forbidden("csrf: login form posted from another origin")
    if not ctx.settings.password_login:
        ctx.security.emit(
            SecurityEvent(
                EventKind.AUTH_FAILURE,
                address=address,
                user=label,
                detail=AuthFactor.PASSWORD_OFF,
            )
        )
        name = ctx.settings.oidc_provider_name
        return await render_login(
            request, ctx, f"Password login is turned off. Sign in with {name}.", 403
        )
    throttle = ctx.login_throttle
    account = f"user:{username.lower()}"
    known = user is not None and (
        _known_device(request, ctx, username) or throttle.known(account, address)
    )
    # A browser or address the account logged in from is held to its own address's count.
    checked = (f"ip:{address}",) if known else (f"ip:{address}", account)
    wait = max(throttle.retry_after(key) for key in checked)
    if wait > 0:
        ctx.security.emit(
            SecurityEvent(EventKind.RATE_LIMITED, address=address, user=label, detail="login")
        )
        return await _too_many(request, ctx, wait)
    for key in (f"ip:{address}", account):  # counted first: parallel guesses cannot skip
        throttle.failed(key)
    factor = await _failed_factor(ctx, user, password, code)
    if factor is not None or user is None:
        ctx.security.emit(
            SecurityEvent(EventKind.AUTH_FAILURE, address=address, user=label, detail=factor or "")
        )
        wrong = WRONG_WITH_CODE if await _wants_code(ctx) else WRONG
        return await render_login(request, ctx, wrong, 401)
    username = user.username
    # Recorded before the session exists: a login the audit log cannot hold is refused.
    await ctx.audit.record(username, "login", address=address, result="ok", before_action=True)
    throttle.succeeded(f"ip:{address}")
    if throttle.retry_after(account) == 0:  # not while a guessing run holds it
        throttle.succeeded(account)
    throttle.remember(account, address)
    ctx.security.emit(SecurityEvent(EventKind.LOGIN, outcome="ok", address=address, user=label))
    response = await start_session(ctx, username, address)
    _set_device_cookie(response, ctx, username)
    return response


async def _too_many(request: Request, ctx: Context, wait: float) -> Response:
    seconds = math.ceil(wait)
    response = await render_login(
        request, ctx, f"Too many failed attempts. Try again in {seconds} s.", 429
    )
    response.headers["Retry-After"] = str(seconds)
    return response


async def _find_user(ctx: Context, username: str) -> user_store.User | None:
    """Return the user a login names (names are stored lower-cased), or None."""
    try:
        name = canonical_username(username)
    except ValidationError:
        return None
    return await user_store.get(ctx.db, name)


def _set_device_cookie(response: Response, ctx: Context, username: str) -> None:
    response.set_cookie(
        _device_cookie(ctx),
        ctx.signer.sign(f"device:{username}:{secrets.token_urlsafe(9)}"),
        httponly=True,
        samesite="strict",
        secure=ctx.settings.secure_cookies,
        path="/",
        max_age=DEVICE_MAX_AGE_S,
    )


async def start_session(ctx: Context, username: str, address: str) -> Response:
    """Return the redirect to the dashboard carrying a brand-new signed session cookie."""
    session_id = tokens.new_session_id()  # always a fresh id: no session fixation
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
        session_cookie(ctx),
        ctx.signer.sign(session_id),
        httponly=True,
        samesite="strict",
        secure=ctx.settings.secure_cookies,
        path="/",
        max_age=ctx.settings.session_absolute_s,
    )
    return response


def _to_login(ctx: Context) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        session_cookie(ctx),
        path="/",
        secure=ctx.settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return response


async def _audit_logout(request: Request, ctx: Context, user: str, everywhere: bool) -> None:
    # Ending sessions only takes access away: it is never refused for want of an entry
    # (an entry that could not be stored in time stays queued and is retried).
    with contextlib.suppress(Unavailable):
        await ctx.audit.record(
            user,
            "logout",
            address=client_address(request),
            detail={"everywhere": True} if everywhere else None,
        )


@router.post("/logout", responses=contract.redirect())
async def logout(request: Request, ctx: Ctx, session: CsrfSession) -> Response:
    await _audit_logout(request, ctx, session.username, everywhere=False)
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
    return _to_login(ctx)


@router.post("/logout-everywhere", responses=contract.redirect())
async def logout_everywhere(request: Request, ctx: Ctx, session: CsrfSession) -> Response:
    """End every session of this user, on every browser; their open streams close."""
    await _audit_logout(request, ctx, session.username, everywhere=True)
    ctx.security.emit(
        SecurityEvent(
            EventKind.LOGOUT,
            outcome="ok",
            address=client_address(request),
            user=session.username,
            detail="everywhere",
        )
    )
    for id_hash in await session_store.delete_for_user(ctx.db, session.username):
        await ctx.bus.publish({"type": "session_ended", "id_hash": id_hash})
    return _to_login(ctx)
