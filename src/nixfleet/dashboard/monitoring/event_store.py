"""Stored security events: the SecurityLog listener queues, a background task writes.

After each batch is on disk one `security` bus event tells browsers (the security panel)
to redraw; one per batch, not per event, so a flood does not flood the browsers too.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from nixfleet.core.secevents import SecurityEvent
from nixfleet.dashboard.monitoring.background import Worker
from nixfleet.storage import security_events as store
from nixfleet.storage.bus import EventBus
from nixfleet.storage.db import Database

PRUNE_EVERY_S = 3600.0


class EventStore:
    def __init__(self, db: Database, bus: EventBus, retention_days: float) -> None:
        self.db, self.bus = db, bus
        self.retention_s = retention_days * 86400
        self.worker: Worker[SecurityEvent] = Worker("security-events", self._write)
        self._pruned_at = 0.0

    def __call__(self, event: SecurityEvent) -> None:
        self.worker.put(event)

    async def _write(self, events: list[SecurityEvent]) -> None:
        await store.add_many(self.db, events)
        latest: dict[str, Any] = asdict(events[-1])
        await self.bus.publish({"type": "security", "count": len(events), "latest": latest})

    async def prune_if_due(self, now: float | None = None) -> int:
        """Delete events older than the retention, at most once per PRUNE_EVERY_S."""
        now = time.time() if now is None else now
        if now - self._pruned_at < PRUNE_EVERY_S:
            return 0
        self._pruned_at = now
        return await store.prune(self.db, now - self.retention_s)
