"""The agents' WebSocket protocol keeps uvicorn's behaviour with lighter parts; on a uvicorn
that renamed what it replaces it stands aside instead of breaking (uvicorn is not pinned)."""

from __future__ import annotations

import asyncio

from uvicorn.config import Config
from uvicorn.server import ServerState

from nixfleet.dashboard.pipeline.websocket import Gate, Inbox, LeanWebSocketProtocol


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
