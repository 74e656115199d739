"""Route tables: routes declared in a module are served by the app under the app's own
dependencies, in the order declared, and nothing is lost on the way."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request

from nixfleet.dashboard.routetable import RouteTable


def _deny_unless_let_in(request: Request) -> None:
    if request.headers.get("x-let-in") != "yes":
        raise HTTPException(status_code=403, detail="not let in")


def _app(*tables: RouteTable) -> httpx.AsyncClient:
    app = FastAPI(dependencies=[Depends(_deny_unless_let_in)])
    for table in tables:
        table.add_to(app.router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_a_tables_route_is_refused_by_the_apps_own_dependency():
    table = RouteTable(prefix="/api/things")

    @table.get("/{name}")
    async def thing(name: str) -> dict[str, str]:
        return {"name": name}

    client = _app(table)
    assert (await client.get("/api/things/a")).status_code == 403
    res = await client.get("/api/things/a", headers={"x-let-in": "yes"})
    assert res.status_code == 200
    assert res.json() == {"name": "a"}


async def test_routes_keep_their_options_and_the_first_declared_wins():
    first, second = RouteTable(), RouteTable()

    @first.post("/same", status_code=201)
    async def one(count: int) -> dict[str, int]:
        return {"one": count}

    @second.post("/same")
    async def two() -> dict[str, int]:
        return {"two": 0}

    client = _app(first, second)
    res = await client.post("/same?count=3", headers={"x-let-in": "yes"})
    assert (res.status_code, res.json()) == (201, {"one": 3})
    bad = await client.post("/same?count=many", headers={"x-let-in": "yes"})
    assert bad.status_code == 422


async def test_a_table_is_not_served_until_added_and_refuses_websocket_routes():
    table = RouteTable()

    @table.get("/here")
    async def here() -> dict[str, bool]:
        return {"here": True}

    assert table.routes == []
    assert (await _app().get("/here", headers={"x-let-in": "yes"})).status_code == 404
    with pytest.raises(TypeError, match="HTTP routes only"):

        @table.websocket("/socket")
        async def socket() -> None:
            return None
