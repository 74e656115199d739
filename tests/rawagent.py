"""A hand-driven agent: a real WebSocket to a real dashboard with a host's real token,
sending exactly what a test (playing a compromised or buggy host) tells it to."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus


def hello(host_id: str, **status: Any) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": 1,
        "host_id": host_id,
        "agent_version": "raw",
        "status": {"hostname": host_id, "os_kind": "nixos", **status},
    }


async def connect(base: str, host_id: str, token: str, say_hello: bool = True) -> ClientConnection:
    """Return an open agent connection; with say_hello, past the welcome."""
    url = base.replace("http://", "ws://") + "/api/agent/ws"
    headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": host_id}
    # No client-side size limit: the test decides what is too large, the dashboard refuses it.
    ws = await websockets.connect(url, additional_headers=headers, open_timeout=10, max_size=None)
    if say_hello:
        await ws.send(json.dumps(hello(host_id)))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert welcome["type"] == "welcome", welcome
    return ws


async def handshake_status(base: str, host_id: str, token: str = "") -> int:
    """Return the HTTP status an agent handshake is answered: 101, or the refusal's."""
    url = base.replace("http://", "ws://") + "/api/agent/ws"
    headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": host_id} if token else {}
    try:
        ws = await websockets.connect(url, additional_headers=headers, open_timeout=10)
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


async def close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Return the close code the dashboard ends the connection with (reading past messages)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def messages_until(ws: ClientConnection, pred: Any, timeout: float = 20) -> dict[str, Any]:
    """Return the first dashboard message for which pred(message) is true."""
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if pred(msg):
                return dict(msg)


def strict_json(text: str) -> Any:
    """Parse JSON as a browser does: NaN and Infinity are errors."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


def db_rows(root: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "dashboard" / "nixfleet.db") as conn:
        return list(conn.execute(sql, args).fetchall())


def first_sse_event(api: Any) -> tuple[str, Any]:
    """Return (event name, strictly parsed data) of the first event a browser gets."""
    with api.http.stream("GET", "/api/events", timeout=10) as res:
        assert res.status_code == 200
        name, data = "", ""
        for line in res.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                return name, strict_json(data)
    raise AssertionError("the event stream ended without an event")
