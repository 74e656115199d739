"""The audit log: who did what, when, from where, and how it ended.

Routes call record(); user actions that are also security events (login, logout, host and
token changes) are recorded from the SecurityLog, so a new producer is audited for free.
Entries are appended by one background task under a lock, in the order they happened.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent
from nixfleet.dashboard.monitoring.background import Worker
from nixfleet.storage import audit as store
from nixfleet.storage.db import Database

# Security events that are a user's action, and the audit action they are recorded as.
_ACTIONS = {
    EventKind.LOGIN: "login",
    EventKind.LOGOUT: "logout",
    EventKind.HOST_ADDED: "host_add",
    EventKind.HOST_REMOVED: "host_remove",
    EventKind.TOKEN_ROTATED: "token_rotate",
    EventKind.TOKEN_REVOKED: "token_revoke",
    EventKind.ENROLLED: "host_enroll",
}
_LOGIN_FACTORS = {AuthFactor.PASSWORD.value, AuthFactor.TOTP.value}


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.lock = asyncio.Lock()
        self.worker: Worker[dict[str, Any]] = Worker("audit", self._write)

    def record(
        self,
        actor: str,
        action: str,
        *,
        host: str = "",
        address: str = "",
        result: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Queue one entry; the request does not wait for the write."""
        self.worker.put(
            {
                "at": time.time(),
                "actor": actor[:100],
                "action": action[:40],
                "host": host[:63],
                "address": address[:64],
                "result": result[:40],
                "detail": detail,
            }
        )

    def on_security_event(self, event: SecurityEvent) -> None:
        if event.kind == EventKind.AUTH_FAILURE and event.detail in _LOGIN_FACTORS:
            action = "login"
        elif event.kind in _ACTIONS:
            action = _ACTIONS[event.kind]
        else:
            return
        self.worker.put(
            {
                "at": event.at,
                "actor": (event.user or "-")[:100],
                "action": action,
                "host": event.host[:63],
                "address": event.address[:64],
                "result": event.outcome[:40],
                "detail": {"factor": event.detail} if event.detail else None,
            }
        )

    async def _write(self, entries: list[dict[str, Any]]) -> None:
        async with self.lock:
            for entry in entries:
                await store.append(self.db, entry)
