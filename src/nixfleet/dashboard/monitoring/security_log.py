"""The dashboard's security event sink: logs each event and hands it to subscribers.

Subscribers are plain callables run inline, so they must not block; one that needs I/O
(storage, notifications) queues the event and does the work in its own task.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from nixfleet.core.secevents import SecurityEvent

log = logging.getLogger("nixfleet.security")

Listener = Callable[[SecurityEvent], None]


class SecurityLog:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.counts: Counter[tuple[str, str]] = Counter()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: SecurityEvent) -> None:
        self.counts[(event.kind.value, event.detail)] += 1
        log.info(
            "security: %s outcome=%s detail=%s address=%s user=%s host=%s",
            event.kind.value,
            event.outcome,
            event.detail or "-",
            event.address or "-",
            event.user or "-",
            event.host or "-",
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("security: a listener failed on %s", event.kind.value)
