"""The agents' WebSocket enters the dashboard at its outermost middleware, so FastAPI's and
Starlette's outer layers keep no frame for each connected agent; every other request, and
a socket that arrives before the app has built its middleware, enters the app as before."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from nixfleet.dashboard.routes.agent_ws import PATH, AgentsPastTheFrame


class Outer:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class Inner(Outer):
    pass


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(Inner)
    app.add_middleware(Outer)  # the last added runs first
    return app


def _entered(entry: AgentsPastTheFrame, kind: str, path: str) -> tuple[Any, Scope]:
    scope: Scope = {"type": kind, "path": path, "headers": []}

    async def nothing(*_: Any) -> Any:
        return {}

    coroutine = entry(scope, nothing, nothing)
    code = coroutine.cr_code  # type: ignore[attr-defined]
    coroutine.close()  # type: ignore[attr-defined]
    return code, scope


def test_the_agents_socket_enters_at_our_outermost_middleware_with_the_app_in_its_scope():
    app = _app()
    app.middleware_stack = app.build_middleware_stack()  # as the lifespan does at start
    code, scope = _entered(AgentsPastTheFrame(app), "websocket", PATH)
    assert code is Outer.__call__.__code__  # no frame of FastAPI's above it
    assert scope["app"] is app  # what the endpoint finds its context through


def test_other_requests_and_a_socket_before_the_stack_is_built_enter_the_app():
    app = _app()
    entry = AgentsPastTheFrame(app)
    assert _entered(entry, "websocket", PATH)[0] is FastAPI.__call__.__code__
    app.middleware_stack = app.build_middleware_stack()
    for kind, path in (("http", PATH), ("websocket", "/api/events"), ("http", "/")):
        assert _entered(entry, kind, path)[0] is FastAPI.__call__.__code__
    assert _entered(entry, "websocket", PATH)[0] is Outer.__call__.__code__
