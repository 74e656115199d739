"""Uvicorn's WebSocket protocol (websockets' sans-I/O one), lighter per open connection.

Every agent holds one for as long as it is connected, so what it keeps counts thousands
of times (docs/benchmarks.md, issue 20). Uvicorn's keeps, per connection:

- an `asyncio.Queue` for the frames the app has not read yet, and an `asyncio.Event` for
  "the transport may be written": five deques of 64 slots each, about 4 KiB, where the
  queue holds one message at a time (uvicorn stops reading until the app took it) and
  one waiter at most. `Inbox` and `Gate` below do the same with a list and a future.
- the parsed handshake request (every header twice, in websockets' `Headers`) and the
  prepared 101 response, kept after the handshake although nothing reads them again:
  about 5 KiB. They are emptied and let go once the handshake is answered.

One behaviour differs: a pong that is late because *we* stopped reading does not close
the connection. Uvicorn stops reading a socket after each message until the app has taken
it, and the agents' endpoint takes the next message only once the last one is stored; while
the database is busy it retries for up to a minute (routes/agent_ws.py) or, under a bulk
deploy to thousands of hosts, waits its turn. The agent's pong sits unread meanwhile, and
uvicorn would close the link with 1011 "keepalive ping timeout" although the agent answered
(in a bulk switch to 20,000 agents on two replicas, thousands of links ended that way;
none with this protocol, docs/benchmarks.md).
Here the wait for the pong starts again while reading is paused; once reading resumes a
peer that really is gone still times out as before.

The rest of uvicorn's behaviour (frames, pings, close handshake, the 1009 for a frame
over the size limit, the denial responses) is its own, unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request


class Inbox:
    """The queue uvicorn reads a connection's events from: put_nowait, get and empty."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiters: list[asyncio.Future[None]] | None = None  # made for the first wait

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_one()

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            waiters = self._waiters = self._waiters or []
            waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Woken, then cancelled before it ran: the item is still here for another.
                if self._items:
                    self._wake_one(skip=waiter)
                raise
            finally:
                waiters.remove(waiter)
                if not waiters:
                    self._waiters = None
        return self._items.pop(0)

    def _wake_one(self, skip: asyncio.Future[None] | None = None) -> None:
        for waiter in self._waiters or ():
            if waiter is not skip and not waiter.done():
                waiter.set_result(None)
                return


class Gate:
    """The event uvicorn waits on before each write: open, or closed while paused."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if self._open:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters = [*(self._waiters or ()), waiter]
        try:
            await waiter
        finally:
            if self._waiters and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


# What uvicorn's __init__ sets alike on every connection of one server: its configuration,
# loop, logger and shared state. CPython shares one table of attribute names among a
# class's instances only up to 29 attributes; uvicorn sets 34, and with the handshake's
# and ours each connection had a dict of its own: 1.6 KiB, against 0.3 for 26 attributes
# shared. These are kept once per server instead (docs/benchmarks.md, seventh pass).
SERVER_WIDE = (
    "config", "app", "loop", "logger", "root_path", "asgi_version", "app_state",
    "connections", "tasks", "default_headers", "close_timeout", "ping_interval",
    "ping_timeout",
)  # fmt: skip


class _Uvicorns(WebSocketsSansIOProtocol):
    """Uvicorn's protocol as it is: what its __init__ sets is read off one of these."""


class _ServerWide:
    """An attribute read from the server's one table, unless the connection has its own."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return obj._server_wide[self.name]


_ABSENT = object()
# The table of the server whose connection was made last: a process serves one, and one
# slot holds no server (its loaded app) alive after it stopped, as a table per server would.
_latest: list[dict[str, Any]] = [{}]


def _server_table(own: dict[str, Any]) -> dict[str, Any]:
    """Return the table of the server-wide attributes own has: the last one made, if own's
    values are all its values (the same server), else a new one made from own."""
    table = _latest[0]
    if table.keys() != {n for n in SERVER_WIDE if n in own} or any(
        own[n] is not v for n, v in table.items()
    ):
        table = _latest[0] = {n: own[n] for n in SERVER_WIDE if n in own}
    return table


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """Uvicorn's protocol with `Inbox` and `Gate`, the server-wide attributes kept once,
    forgetting its handshake once answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Uvicorn's own __init__, run on an object of its own, and only what differs from
        # the server's table copied here: whatever a uvicorn release sets, this connection
        # has it, with the same value (a value not the table's stays the connection's own).
        own = vars(_Uvicorns(*args, **kwargs))
        self._server_wide = table = _server_table(own)
        for name, value in own.items():
            if table.get(name, _ABSENT) is not value:
                setattr(self, name, value)
        # Replaced, not subclassed: uvicorn calls only the methods these two have. Only
        # where uvicorn still keeps them under these names and types (it is not pinned):
        # otherwise its own stay, and the connection is as heavy as uvicorn makes it.
        if isinstance(getattr(self, "queue", None), asyncio.Queue):
            self.queue = Inbox()  # type: ignore[assignment]
        if isinstance(getattr(self, "writable", None), asyncio.Event):
            self.writable = Gate()  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The scope holds the headers the app reads; this copy has no reader after the
        # 101 was prepared from it. Emptied, not only let go: websockets' parser keeps
        # the request it parsed in its frame for the life of the connection. (Set to
        # None, not deleted: reading `__dict__` would give the connection a dict object.)
        event.headers.clear()
        self.request = None  # type: ignore[assignment]

    def keepalive_timeout(self) -> None:
        wait = self.ping_timeout
        if wait and getattr(self, "read_paused", False) and self.pending_ping_payload:
            # The pong may be waiting in the socket behind a message the app has not taken:
            # our delay, not the agent's. Wait again; handle_pong ends the wait as usual.
            self.pong_timer = self.loop.call_later(wait, self.keepalive_timeout)
            return
        super().keepalive_timeout()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # The 101 it prepared is sent (or a denial was sent instead): not needed again.
            self.response = None  # type: ignore[assignment]


for _name in SERVER_WIDE:
    # Set after the class: uvicorn declares them as instance attributes of its own types.
    setattr(LeanWebSocketProtocol, _name, _ServerWide(_name))
