"""The login throttle across replicas: each replica's throttle, kept alike over the bus.

Every failure, success and remembered address a replica records is published (PostgreSQL
bus) and applied by the others, so a guessing run spread over replicas is counted as one.
Keys travel and are kept as digests: a password typed into the user-name field must not
reach the event journal. A guess on another replica in the few milliseconds before the
event arrives is counted there a moment later, not refused: the throttle slows guessing,
it is not a lock.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from nixfleet.security.throttle import LoginThrottle
from nixfleet.storage.bus import Event, EventBus


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "backslashreplace")).hexdigest()[:32]


class SharedLoginThrottle(LoginThrottle):
    def __init__(self, bus: EventBus, origin: str, **limits: Any) -> None:
        super().__init__(**limits)
        self.bus = bus
        self.origin = origin
        self._tasks: set[asyncio.Task[None]] = set()
        bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event["type"] != "throttle" or event.get("origin") == self.origin:
            return
        key = str(event.get("key", ""))[:64]
        if event.get("op") == "failed":
            super().failed(key)
        elif event.get("op") == "succeeded":
            super().succeeded(key)
        elif event.get("op") == "remember":
            super().remember(key, str(event.get("address", ""))[:64])

    def _share(self, **fields: str) -> None:
        event = {"type": "throttle", "origin": self.origin, **fields}
        task = asyncio.get_running_loop().create_task(self.bus.publish(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retry_after(self, key: str) -> float:
        return super().retry_after(_digest(key))

    def failed(self, key: str) -> None:
        super().failed(_digest(key))
        self._share(op="failed", key=_digest(key))

    def succeeded(self, key: str) -> None:
        super().succeeded(_digest(key))
        self._share(op="succeeded", key=_digest(key))

    def remember(self, account: str, address: str) -> None:
        super().remember(_digest(account), address)
        self._share(op="remember", key=_digest(account), address=address)

    def known(self, account: str, address: str) -> bool:
        return super().known(_digest(account), address)
