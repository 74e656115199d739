"""Server-Sent Events for browsers: a snapshot on connect, then ordered deltas.

Each browser has a bounded queue. The broadcaster never awaits a browser: a full queue
drops the event and marks the browser for a resync (a fresh snapshot once it drains),
so one stalled tab neither blocks the others nor grows memory without bound.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nixfleet.storage.bus import Event, EventBus

KEEPALIVE_S = 15.0
# Events for agents' eyes only never reach a browser.
_PRIVATE = frozenset({"agent_control", "session_ended"})


class Subscriber:
    def __init__(self, size: int, session: str) -> None:
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue(maxsize=size)
        self.needs_resync = False
        self.session = session
        self.ended = False

    def end(self) -> None:
        """Stop this stream; the marker wakes a reader blocked on an empty queue."""
        self.ended = True
        try:
            self.queue.put_nowait((0, {"type": "session_ended"}))
        except asyncio.QueueFull:
            pass  # a full queue wakes the reader anyway, and it checks `ended` first

    def offer(self, seq: int, event: Event) -> bool:
        """Queue the event; return False if it was dropped (the browser will resync)."""
        if self.needs_resync:
            return False
        try:
            self.queue.put_nowait((seq, event))
        except asyncio.QueueFull:
            self.needs_resync = True
            return False
        return True


class Broadcaster:
    def __init__(self, bus: EventBus, queue_size: int) -> None:
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.seq = 0
        self.dropped = 0  # events not delivered to some browser (read by /metrics)
        self._unsubscribe = bus.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        if event["type"] == "session_ended":
            # A logged-out session must stop receiving fleet state at once.
            for sub in tuple(self.subscribers):
                if sub.session == event["id_hash"]:
                    sub.end()
        if event["type"] in _PRIVATE:
            return
        self.seq += 1
        for sub in tuple(self.subscribers):
            if not sub.offer(self.seq, event):
                self.dropped += 1

    async def stream(
        self,
        session: str,
        snapshot: Callable[[], Awaitable[dict[str, Any]]],
        still_valid: Callable[[], Awaitable[bool]],
    ) -> AsyncIterator[str]:
        """Yield SSE frames for one browser until it goes away or its session ends."""
        sub = Subscriber(self.queue_size, session)
        self.subscribers.add(sub)
        try:
            yield "retry: 2000\n\n"
            yield _frame(self.seq, "snapshot", await snapshot())
            while True:
                try:
                    seq, event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    # Idle and absolute expiry apply to open streams too.
                    if not await still_valid():
                        sub.end()
                    else:
                        yield ": keep-alive\n\n"
                        continue
                if sub.ended:
                    yield "event: session_ended\ndata: {}\n\n"
                    return
                yield _frame(seq, event["type"], event)
                if sub.needs_resync and sub.queue.empty():
                    sub.needs_resync = False
                    yield _frame(self.seq, "resync", await snapshot())
        finally:
            self.subscribers.discard(sub)


def _frame(seq: int, kind: str, data: dict[str, Any]) -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
