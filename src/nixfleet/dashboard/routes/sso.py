"""Sign in with the OpenID Connect provider: the start, and the provider's callback.

The start stores the state, nonce and PKCE verifier (storage/oidc_logins) and binds the
state to this browser in a short-lived signed cookie; the callback must present both,
so a state is used once, and only by the browser that began the sign-in (login CSRF).
Every refusal is a security event (and an audit entry) naming why; no token is logged.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import RedirectResponse, Response

from nixfleet.core.errors import NotFound, for_people
from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent
from nixfleet.dashboard import contract
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.deps import Ctx, client_address
from nixfleet.dashboard.routes.auth import render_login, start_session
from nixfleet.dashboard.routetable import RouteTable
from nixfleet.dashboard.signon import SignOn
from nixfleet.security.oidc import SignOnError
from nixfleet.storage import oidc_logins

router = RouteTable()
STATE_COOKIE = "nixfleet_oidc"
_STATE_PREFIX = "oidc-state:"
# Refusals that are the browser's or the provider's doing (401), or the user's lot (403).
_FORBIDDEN = {AuthFactor.OIDC_UNMAPPED, AuthFactor.OIDC_USER, AuthFactor.OIDC_DISABLED}


def _sign_on(ctx: Context) -> SignOn:
    if ctx.sign_on is None:
        raise NotFound("signon: single sign-on is not configured")
    return ctx.sign_on


def _state_cookie(ctx: Context) -> str:
    return f"__Secure-{STATE_COOKIE}" if ctx.settings.secure_cookies else STATE_COOKIE


@router.get(
    "/login/oidc",
    responses={**contract.redirect(), **contract.page(502), **contract.errors(404)},
)
async def start(request: Request, ctx: Ctx) -> Response:
    """Send the browser to the provider, with a fresh state, nonce and PKCE challenge."""
    sign_on = _sign_on(ctx)
    try:
        begun = await sign_on.start(request)
    except SignOnError as exc:
        return await _refused(request, ctx, exc.fault, str(exc), "", 502)
    await oidc_logins.add(ctx.db, begun.state, begun.nonce, begun.verifier)
    response = RedirectResponse(begun.url, status_code=303)
    response.set_cookie(
        _state_cookie(ctx),
        ctx.signer.sign(_STATE_PREFIX + begun.state),
        httponly=True,
        # Lax: the provider's redirect back is a top-level navigation from another site.
        samesite="lax",
        secure=ctx.settings.secure_cookies,
        path="/login/oidc",
        max_age=int(oidc_logins.WINDOW_S),
    )
    return response


@router.get(
    "/login/oidc/callback",
    responses={**contract.redirect(), **contract.page(401, 403), **contract.errors(404)},
)
async def callback(
    request: Request,
    ctx: Ctx,
    state: Annotated[str, Query(max_length=200)] = "",
    code: Annotated[str, Query(max_length=2000)] = "",
    error: Annotated[str, Query(max_length=200)] = "",
    iss: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    """Finish the sign-in: state, then the provider's tokens, then the user; or refuse."""
    sign_on = _sign_on(ctx)
    raw = request.cookies.get(_state_cookie(ctx))
    mine = ctx.signer.unsign(raw) if raw else None
    pending = await oidc_logins.take(ctx.db, state) if state else None
    if (
        pending is None
        or not mine
        or not hmac.compare_digest(mine.encode(), (_STATE_PREFIX + state).encode())
    ):
        text = "signon: this sign-in is unknown, used already or too old; please start again"
        return await _refused(request, ctx, AuthFactor.OIDC_STATE, text, "", 401)
    if iss and iss != ctx.settings.oidc_issuer:  # RFC 9207: an answer from another provider
        text = "signon: the answer came from another provider"
        return await _refused(request, ctx, AuthFactor.OIDC_ISSUER, text, "", 401)
    if error or not code:
        said = f" ({error[:60]})" if error else ""
        text = f"signon: the provider did not sign you in{said}"
        return await _refused(request, ctx, AuthFactor.OIDC_PROVIDER, text, "", 401)
    try:
        signed_in = await sign_on.finish(ctx, request, code, pending.verifier, pending.nonce)
    except SignOnError as exc:
        status = 403 if exc.fault in _FORBIDDEN else 401
        return await _refused(request, ctx, exc.fault, str(exc), exc.user, status)
    user = signed_in.user
    address = client_address(request)
    if signed_in.created:
        await ctx.audit.record(
            user.username,
            "user_add",
            address=address,
            detail={"user": user.username, "role": user.role.label, "source": "oidc"},
        )
    # Recorded before the session exists: a login the audit log cannot hold is refused.
    await ctx.audit.record(
        user.username,
        "login",
        address=address,
        result="ok",
        detail={"via": "oidc", "role": user.role.label},
        before_action=True,
    )
    ctx.security.emit(
        SecurityEvent(
            EventKind.LOGIN, outcome="ok", address=address, user=user.username, detail="oidc"
        )
    )
    response = await start_session(ctx, user.username, address)
    _forget_state(response, ctx)
    return response


async def _refused(
    request: Request, ctx: Context, fault: AuthFactor, text: str, user: str, status: int
) -> Response:
    ctx.security.emit(
        SecurityEvent(
            EventKind.AUTH_FAILURE, address=client_address(request), user=user, detail=fault
        )
    )
    response = await render_login(request, ctx, for_people(text), status)
    _forget_state(response, ctx)
    return response


def _forget_state(response: Response, ctx: Context) -> None:
    response.delete_cookie(
        _state_cookie(ctx),
        path="/login/oidc",
        secure=ctx.settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )
