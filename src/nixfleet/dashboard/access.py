"""Who may call which route: the one table, and the check every request passes first.

Every route of the app has a line in `NEEDS`; `create_app` refuses to start when one is
missing, so a new route cannot go out without a declared role. The table is read by
`authorize`, an app-wide dependency that runs before the route's own: the caller must
hold the role, and a state-changing request from a browser session must carry its CSRF
token. An API token (Bearer) needs no CSRF token (it is no ambient authority), but it
must be allowed on the route (`tokens`) and its scope must reach it (`scope`: "host"
when the path names the host, "command" when the route checks hosts and kind itself,
see `dashboard/apitokens.py`). `None` marks the few routes that authenticate their
caller themselves (login, the agents' enrollment, the scrape-token metrics, health).
The agents' WebSocket is no route of the router: it is served ahead of it, and
authenticates the agent itself (`routes/agent_ws.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute

from nixfleet.core.errors import AuthError, Forbidden
from nixfleet.core.roles import Role
from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.dashboard import apitokens
from nixfleet.dashboard.deps import Session, caller, check_csrf, client_address

V, OP, A = Role.VIEWER, Role.OPERATOR, Role.ADMIN


@dataclass(frozen=True)
class Need:
    role: Role | None  # None: public, or the route authenticates its caller itself
    page: bool = False  # a browser page: without a session, a redirect to /login
    tokens: bool = True  # False: a browser session only, never an API token
    scope: str = ""  # a scoped token may change state here: "host" or "command" (above)


PUBLIC = Need(None)

NEEDS: dict[str, Need] = {
    "GET /health": PUBLIC,
    "GET /metrics": PUBLIC,  # its own scrape token
    "GET /login": PUBLIC,
    "POST /login": PUBLIC,  # its own Origin check
    "GET /login/oidc": PUBLIC,  # single sign-on: off to the provider
    "GET /login/oidc/callback": PUBLIC,  # the state (one-time, this browser's) and ID token
    "POST /api/agent/enroll": PUBLIC,  # one-time enrollment code
    "POST /api/hooks/{forge_name}": PUBLIC,  # the forge signs the body
    "POST /logout": Need(V, tokens=False),
    "POST /logout-everywhere": Need(V, tokens=False),
    # pages
    "GET /": Need(V, page=True),
    "GET /hosts/{host_id}": Need(V, page=True),
    "GET /rollouts": Need(V, page=True),
    "GET /rollouts/{rollout_id}": Need(V, page=True),
    "GET /security": Need(V, page=True),
    "GET /audit": Need(V, page=True),
    "GET /users": Need(A, page=True),
    "GET /tokens": Need(V, page=True, tokens=False),
    "GET /security/panel": Need(V),
    # reading
    "GET /api/events": Need(V),
    "GET /api/hosts": Need(V),
    "GET /api/hosts/{host_id}/samples": Need(V),
    "GET /api/hosts/{host_id}/states": Need(V),
    "GET /api/hosts/{host_id}/commands": Need(V),
    "GET /api/commands/{command_id}": Need(V),
    "GET /api/commands/{command_id}/output": Need(V),
    "GET /api/commands/{command_id}/log.txt": Need(V),
    "GET /api/rollouts": Need(V),
    "GET /api/rollouts/{rollout_id}": Need(V),
    "GET /api/security/summary": Need(V),
    "GET /api/audit": Need(V),
    "GET /api/openapi.json": Need(V),
    # acting on hosts
    "POST /api/hosts/{host_id}/command": Need(OP, scope="command"),
    "PUT /api/hosts/{host_id}/health-gate": Need(OP, scope="host"),
    "POST /api/commands/bulk": Need(OP, scope="command"),
    "POST /api/commands/{command_id}/cancel": Need(OP, scope="command"),
    "POST /api/rollouts": Need(OP, scope="command"),
    "POST /api/rollouts/{rollout_id}/{action}": Need(OP, scope="command"),
    # hosts, their credentials, users
    "POST /api/hosts": Need(A),
    "DELETE /api/hosts/{host_id}": Need(A, scope="host"),
    # Labels decide label scopes: a scoped token never sets them.
    "PUT /api/hosts/{host_id}/labels": Need(A),
    "POST /api/hosts/{host_id}/agent-token": Need(A, scope="host"),
    "DELETE /api/hosts/{host_id}/agent-token": Need(A, scope="host"),
    "POST /api/hosts/{host_id}/enroll-code": Need(A, scope="host"),
    "PUT /api/hosts/{host_id}/client-cert": Need(A, scope="host"),
    "DELETE /api/hosts/{host_id}/client-cert": Need(A, scope="host"),
    "GET /api/users": Need(A),
    "POST /api/users": Need(A),
    "PATCH /api/users/{username}": Need(A),
    # API tokens: each user their own, admins every one and service tokens. A token
    # never manages tokens: a leaked one cannot make itself a longer-lived successor.
    "GET /api/tokens": Need(V, tokens=False),
    "POST /api/tokens": Need(V, tokens=False),
    "DELETE /api/tokens/{token_id}": Need(V, tokens=False),
}


class LoginRequired(Exception):
    """A page was asked for without a session: the answer is the login page."""


def route_keys(routes: Iterable[BaseRoute]) -> list[str]:
    """Return "METHOD path" of every route among routes ("WS path" for a WebSocket)."""
    keys = []
    for route in routes:
        if isinstance(route, APIRoute):
            keys += [f"{method} {route.path}" for method in sorted(route.methods or ())]
        elif isinstance(route, APIWebSocketRoute):
            keys.append(f"WS {route.path}")
    return keys


def check_routes(routes: Iterable[BaseRoute]) -> None:
    """Raise RuntimeError naming every route among routes that has no line in NEEDS.

    A route added some other way has no line either, and `authorize` refuses it.
    """
    missing = [key for key in route_keys(routes) if key not in NEEDS]
    if missing:
        raise RuntimeError(f"access: routes without a declared role: {', '.join(missing)}")


def _key(conn: HTTPConnection) -> str:
    route = conn.scope.get("route")
    path = getattr(route, "path", "")
    return f"{conn.scope.get('method', 'WS')} {path}"


async def authorize(conn: HTTPConnection) -> None:
    """Refuse the request unless its caller holds the role its route needs.

    1. Look the route up in NEEDS (an unknown route is refused, never let through).
    2. Public routes pass; the rest need a caller: none is a 401 (a page: to /login).
    3. A role below the route's is a 403 and a security event naming the route; so is
       an API token on a route for sessions only.
    4. A token must be scoped to reach the route; a session's state-changing request
       must pass the CSRF check.
    """
    key = _key(conn)
    need = NEEDS.get(key)
    if need is None:
        raise Forbidden("access: this route declares no role")
    if need.role is None:
        return
    who = await caller(conn)
    if who is None:
        if need.page:
            raise LoginRequired
        raise AuthError("auth: log in first (no valid session)")
    if who.token is not None and not need.tokens:
        raise _denied(conn, who, key, "this needs a logged-in session, not an API token")
    if who.role < need.role:
        raise _denied(conn, who, key, f"this needs the {need.role.label} role")
    if who.token is not None:
        await apitokens.check_route(conn, key, need.scope, who)
    elif isinstance(conn, Request):
        await check_csrf(conn, conn.app.state.ctx, who)


def _denied(conn: HTTPConnection, who: Session, key: str, message: str) -> Forbidden:
    conn.app.state.ctx.security.emit(
        SecurityEvent(
            EventKind.ACCESS_DENIED,
            address=client_address(conn),
            user=who.username,
            detail=key[:120],
        )
    )
    return Forbidden(f"access: {message}")


def install(app: FastAPI) -> None:
    """Answer LoginRequired with the login page (the table itself is checked at start)."""

    @app.exception_handler(LoginRequired)
    async def _to_login(_: Request, __: LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)
