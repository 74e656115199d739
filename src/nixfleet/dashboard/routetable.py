"""A route module's table of routes: declared where they live, built once, on the app.

FastAPI builds an `APIRouter`'s route (its dependants, parameter and response fields, one
pydantic TypeAdapter each) when the decorator runs. Since 0.137 an included router is kept
whole, and each of its routes is built a second time, under the app's own dependencies,
on the first request that reaches that router: about 1 ms a route, so a fresh dashboard's
first command waited 20–50 ms behind it, and every route was held twice. A `RouteTable`
builds nothing when declared; `add_to` adds each route to the app's own router, which
builds it once, at start-up, and serves it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter


@dataclass(frozen=True)
class _Entry:
    path: str
    endpoint: Callable[..., Any]
    options: dict[str, Any]


class RouteTable(APIRouter):
    """Decorate endpoints as on an APIRouter (`@table.get(...)`, `@table.post(...)` …).

    Only HTTP routes: a WebSocket route is refused when declared rather than lost (the
    agents' socket is served ahead of FastAPI's router, routes/agent_ws.py). `routes` stays
    empty: ask the app's routes, after `add_to`.
    """

    def __init__(self, prefix: str = "") -> None:
        super().__init__(prefix=prefix)
        self._entries: list[_Entry] = []

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        self._entries.append(_Entry(self.prefix + path, endpoint, options))

    def add_api_websocket_route(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a RouteTable holds HTTP routes only")

    def add_to(self, router: APIRouter) -> None:
        """Add every route, in the order declared, to router (the app's): built there."""
        for entry in self._entries:
            router.add_api_route(entry.path, entry.endpoint, **entry.options)
