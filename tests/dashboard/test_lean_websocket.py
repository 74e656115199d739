"""The agents' WebSocket protocol keeps uvicorn's behaviour with lighter parts; on a uvicorn
that renamed what it replaces it stands aside instead of breaking (uvicorn is not pinned).
The HTTP protocol an agent's connection started with is let go once it is upgraded."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from typing import Any

from uvicorn.config import Config
from uvicorn.server import Server, ServerState
from websockets.asyncio.client import connect

from nixfleet.dashboard.pipeline.websocket import Gate, Inbox, LeanWebSocketProtocol
from nixfleet.dashboard.server import ConnectionGuard, GuardedHttpProtocol, guarded_protocol


def _config() -> Config:
    config = Config(app=lambda scope, receive, send: None, ws="websockets-sansio")
    config.load()
    return config


def test_the_installed_uvicorn_gets_the_light_inbox_and_gate():
    # If this fails, a uvicorn release renamed its queue or write event: every agent's
    # connection is back to uvicorn's weight (docs/benchmarks.md, per connected agent).
    async def build() -> LeanWebSocketProtocol:
        return LeanWebSocketProtocol(_config(), ServerState(), {})

    protocol = asyncio.run(build())
    assert isinstance(protocol.queue, Inbox) and isinstance(protocol.writable, Gate)


def test_a_uvicorn_without_those_parts_keeps_its_own(monkeypatch):
    from uvicorn.protocols.websockets import websockets_sansio_impl as impl

    def renamed(self, *args, **kwargs):  # a release that keeps its queue under another name
        self.inbound = asyncio.Queue()

    monkeypatch.setattr(impl.WebSocketsSansIOProtocol, "__init__", renamed)

    async def build() -> LeanWebSocketProtocol:
        return LeanWebSocketProtocol(_config(), ServerState(), {})

    protocol = asyncio.run(build())
    assert not hasattr(protocol, "queue") and isinstance(protocol.inbound, asyncio.Queue)


def test_a_connection_has_every_attribute_uvicorn_sets_with_its_value_per_server():
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    async def check(config: Config, state: ServerState, app_state: dict[str, Any]) -> None:
        stock = WebSocketsSansIOProtocol(config, state, app_state)
        one, two = (LeanWebSocketProtocol(config, state, app_state) for _ in range(2))
        for name, value in vars(stock).items():
            if name in ("queue", "writable"):  # the light ones (the test above)
                continue
            if isinstance(value, int | float | str | bytes | tuple | type(None)):
                assert getattr(one, name) == value, name
            elif name in ("conn", "frames"):  # each connection's own
                assert type(getattr(one, name)) is type(value), name
                assert getattr(one, name) is not getattr(two, name), name
            else:  # the server's one configuration, loop, logger, shared sets
                assert getattr(one, name) is value is getattr(two, name), name
        assert one.conn.max_message_size == stock.conn.max_message_size == config.ws_max_size

    async def both() -> None:
        for config in (_config(), _config()):  # two servers, each its own table
            await check(config, ServerState(), {"lifespan": "state"})

    asyncio.run(both())


async def test_an_upgraded_connection_lets_go_of_its_http_protocol_at_once():
    # What the agents' link is: an HTTP request upgraded to a WebSocket that echoes.
    made: list[weakref.ref[GuardedHttpProtocol]] = []

    class Recorded(guarded_protocol(ConnectionGuard(64, 8, 5.0))):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            made.append(weakref.ref(self))
            super().connection_made(transport)

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})
        await receive()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = Config(echo, http=Recorded, ws=LeanWebSocketProtocol, lifespan="off", log_config=None)
    server = Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    gc.disable()  # freed by its count of references, not by a collection
    try:
        async with connect(f"ws://127.0.0.1:{sock.getsockname()[1]}/") as ws:
            await ws.send("ping")
            assert await ws.recv() == "ping"
            assert len(made) == 1 and made[0]() is None
    finally:
        gc.enable()
        server.should_exit = True
        await serving
