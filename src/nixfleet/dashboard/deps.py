"""Request dependencies: the context, the caller (a session or an API token), and the one
CSRF check.

Who may call which route is decided once, in `dashboard/access.py`, before any of these
run for a route; the route's own `CurrentSession` then only hands it the caller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import Scope

from nixfleet.core.errors import AuthError, Forbidden
from nixfleet.core.roles import Role
from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent
from nixfleet.dashboard.context import Context
from nixfleet.security import csrf, tokens
from nixfleet.security.clientip import Origin, resolve
from nixfleet.security.sessions import cookie_name
from nixfleet.storage import api_tokens as token_store
from nixfleet.storage import sessions as session_store
from nixfleet.storage import users as user_store
from nixfleet.storage.api_tokens import ApiToken

CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Writing last_seen on every request would make each page view a DB write.
_TOUCH_EVERY_S = 60
# Longer than any token we issue (4 + 43): anything longer is refused before hashing.
_TOKEN_MAX_CHARS = 100


@dataclass(frozen=True)
class Session:
    """Who is calling: a browser session, or an API token (`token` set, no CSRF token).

    For a token, `username` is how the audit log names it (`token:<id> of <user>`) and
    `id_hash` is `token:<id>`, which names its event streams.
    """

    id_hash: str
    username: str
    csrf: str
    role: Role = Role.VIEWER
    token: ApiToken | None = None


async def get_ctx(request: Request) -> Context:
    # async although it awaits nothing: FastAPI runs a plain `def` dependency in its
    # thread pool, a hand-off to a worker thread and back (its queue, the GIL, the
    # loop's wake-up) on every request for one attribute read (py-spy, docs/benchmarks.md
    # "Sixth pass").
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(get_ctx)]


def request_origin(scope: Scope) -> Origin:
    """Return where a request or WebSocket really comes from, resolved once per request.

    Forwarded headers count only from NIXFLEET_TRUSTED_PROXIES (`app.state.trusted_proxies`).
    """
    state = scope.setdefault("state", {})
    found = state.get("origin")
    if isinstance(found, Origin):
        return found
    app = scope.get("app")
    trusted = getattr(app.state, "trusted_proxies", ()) if app is not None else ()
    client = scope.get("client")
    found = resolve(client[0] if client else None, Headers(scope=scope), trusted)
    state["origin"] = found
    return found


def client_address(conn: HTTPConnection) -> str:
    """Return the real client address of a request or WebSocket (proxy-aware)."""
    return request_origin(conn.scope).address


def is_https(conn: HTTPConnection | Scope) -> bool:
    """Return whether the browser reached us over TLS: directly, or per a trusted proxy.

    Decides the Secure cookie flag and HSTS. A client cannot claim HTTPS itself:
    X-Forwarded-Proto and Forwarded proto= count only from a trusted proxy.
    """
    scope = conn.scope if isinstance(conn, HTTPConnection) else conn
    return scope.get("scheme") in ("https", "wss") or request_origin(scope).proto in (
        "https",
        "wss",
    )


async def live_session(ctx: Context, id_hash: str) -> Session | None:
    """Return the session stored under id_hash if neither idle nor absolute expiry passed
    and its user exists and is enabled, with the user's role as it is now.

    Expired rows, and rows of removed or disabled users, are deleted on sight.
    """
    row = await session_store.get_with_user(ctx.db, id_hash)
    if row is None:
        return None
    now = time.time()
    if (
        row["role"] is None  # the user was removed
        or row["disabled"]
        or now - row["last_seen"] > ctx.settings.session_idle_s
        or now - row["created_at"] > ctx.settings.session_absolute_s
    ):
        await session_store.delete_one(ctx.db, id_hash)
        return None
    if now - row["last_seen"] > _TOUCH_EVERY_S:
        await session_store.touch(ctx.db, id_hash, now)
    return Session(id_hash, row["username"], row["csrf"], Role.parse(row["role"]))


def session_cookie(ctx: Context) -> str:
    """Return the session cookie's name (`__Host-` prefixed when served over HTTPS)."""
    return cookie_name(ctx.settings.secure_cookies)


_UNRESOLVED = object()


async def caller(conn: HTTPConnection) -> Session | None:
    """Return who sent this request or opened this WebSocket (resolved once), or None.

    A request with `Authorization: Bearer` is the token's alone: its cookie, if any, is
    not looked at, so a token request never carries a browser's ambient authority.
    """
    found = getattr(conn.state, "caller", _UNRESOLVED)
    if found is _UNRESOLVED:
        bearer = bearer_token(conn.headers.get("authorization"))
        ctx = conn.app.state.ctx
        found = (
            await _session_of(conn, ctx)
            if bearer is None
            else await token_caller(conn, ctx, bearer)
        )
        conn.state.caller = found
    return found  # type: ignore[return-value]


def bearer_token(header: str | None) -> str | None:
    """Return the credential of an `Authorization: Bearer …` header, or None."""
    scheme, _, value = (header or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def token_caller(conn: HTTPConnection, ctx: Context, presented: str) -> Session:
    """Return the caller an API token names, or raise AuthError after a security event.

    1. Only its HMAC is looked up (the lookup key, as for agent tokens).
    2. Revoked, expired, or owned by a disabled user: refused, the event names the id.
    3. A user's token acts with at most its owner's role as it is now.
    """
    address = client_address(conn)
    token = None
    if presented.startswith(tokens.API_TOKEN_PREFIX) and len(presented) <= _TOKEN_MAX_CHARS:
        key = ctx.settings.agent_token_hash_secret.get_secret_value()
        token = await token_store.by_hash(ctx.db, tokens.hash_agent_token(key, presented))
    now = time.time()
    if token is None:
        raise _refuse_token(ctx, address, "", AuthFactor.API_TOKEN, "not a valid API token")
    if token.revoked_at is not None:
        raise _refuse_token(ctx, address, token.id, AuthFactor.REVOKED_API_TOKEN, "revoked")
    if token.expires_at <= now:
        raise _refuse_token(ctx, address, token.id, AuthFactor.EXPIRED_API_TOKEN, "expired")
    role = token.role
    if token.owner is not None:
        owner = await user_store.get(ctx.db, token.owner)
        if owner is None or owner.disabled:
            why = "its owner is disabled"
            raise _refuse_token(ctx, address, token.id, AuthFactor.API_TOKEN_OWNER, why)
        role = min(role, owner.role)
    if token.last_used_from != address or now - (token.last_used_at or 0) > _TOUCH_EVERY_S:
        await token_store.note_use(ctx.db, token.id, now, address)
    conn.state.user = token.actor  # for the access log
    return Session(f"token:{token.id}", token.actor, "", role, token)


def _refuse_token(
    ctx: Context, address: str, token_id: str, factor: AuthFactor, why: str
) -> AuthError:
    user = f"token:{token_id}" if token_id else ""
    ctx.security.emit(
        SecurityEvent(EventKind.AUTH_FAILURE, address=address, user=user, detail=factor)
    )
    return AuthError(f"auth: this API token is {why}" if token_id else f"auth: {why}")


async def still_live(ctx: Context, who: Session) -> bool:
    """Return whether who may still be served (an open event stream asks this)."""
    if who.token is None:
        return await live_session(ctx, who.id_hash) is not None
    return bool(await token_store.live_of(ctx.db, {who.token.id}, time.time()))


async def optional_session(request: Request) -> Session | None:
    """Return the live session named by the cookie, or None."""
    return await caller(request)


async def _session_of(conn: HTTPConnection, ctx: Context) -> Session | None:
    """Return the live session named by the cookie, or None.

    1. The signature must verify with one of the configured secrets (forged, tampered
       and rotated-out cookies stop here, without a database read).
    2. The row must exist and be within idle and absolute expiry.
    """
    raw = conn.cookies.get(session_cookie(ctx))
    session_id = ctx.signer.unsign(raw) if raw else None
    if not session_id:
        return None
    session = await live_session(ctx, tokens.hash_session_id(session_id))
    if session is not None:
        conn.state.user = session.username  # for the access log
    return session


async def require_session(
    session: Annotated[Session | None, Depends(optional_session)],
) -> Session:
    if session is None:
        raise AuthError("auth: log in first (no valid session)")
    return session


def from_this_origin(request: Request) -> bool:
    """Return False when Origin or Referer names another site than this dashboard."""
    headers = request.headers
    return csrf.same_origin(headers.get("origin"), headers.get("referer"), headers.get("host"))


async def check_csrf(request: Request, ctx: Context, session: Session) -> None:
    """Refuse a state-changing request without this session's CSRF token or from elsewhere.

    Called for every route by `access.authorize`, so no route can forget it.
    """
    if request.method in SAFE_METHODS:
        return

    def refuse(reason: str, message: str) -> Forbidden:
        ctx.security.emit(
            SecurityEvent(
                EventKind.CSRF_FAILURE,
                address=client_address(request),
                user=session.username,
                detail=reason,
            )
        )
        return Forbidden(message)

    if not from_this_origin(request):
        raise refuse("origin", "csrf: request comes from another origin")
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form = await request.form()
        value = form.get("csrf_token")
        presented = value if isinstance(value, str) else None
    if not csrf.csrf_matches(session.csrf, presented):
        raise refuse(
            "token", "csrf: missing or wrong CSRF token (send it in the X-CSRF-Token header)"
        )


CurrentSession = Annotated[Session, Depends(require_session)]
# access.authorize has checked CSRF for every unsafe request before the route runs; the
# name stays so a route says that it changes state.
CsrfSession = CurrentSession
