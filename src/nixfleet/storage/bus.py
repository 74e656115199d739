"""The event bus: how one part of the dashboard tells the others that something changed.

The interface is two methods so that a PostgreSQL LISTEN/NOTIFY bus can replace the
in-process one for several dashboard replicas without touching the web layer.
Handlers are called synchronously and must not block: they hand the event to a queue.
An event with `"scope": "local"` stays in this process: every replica derives it itself
(the fleet's target commit and the drift it causes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Event = dict[str, Any]
Handler = Callable[[Event], None]


class EventBus(Protocol):
    async def publish(self, event: Event) -> None: ...

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Register handler; return a function that unregisters it."""
        ...


class LocalBus:
    """Deliver events to handlers in this process, in publish order."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    async def publish(self, event: Event) -> None:
        for handler in tuple(self._handlers):
            handler(event)

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler)
