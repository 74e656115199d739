"""The audit log: who did what, when, from where, and how it ended.

An action's entry is stored before the dashboard answers (`record`): if it cannot be
stored within NIXFLEET_AUDIT_WRITE_TIMEOUT_S the answer is 503, and the entry stays
queued and is retried until it is stored (`docs/reliability.md`). A login is recorded
before its session exists, so a login the log cannot hold is refused. Outcomes that change
nothing (a refused login, a refused command) are queued (`record_later`) and retried.

Failed logins come from the SecurityLog, so a new kind of refusal is audited for free.
Every entry is signed and the newest one's seq and hash are written to the anchor file
and the log: see core.audit for what that proves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from nixfleet.core.errors import Unavailable
from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent
from nixfleet.dashboard.monitoring.background import Worker
from nixfleet.storage import audit as store
from nixfleet.storage.db import Database, is_transient

log = logging.getLogger("nixfleet.audit")
_LOGIN_FACTORS = {AuthFactor.PASSWORD.value, AuthFactor.TOTP.value} | {
    f.value for f in AuthFactor if f.value.startswith("oidc_") or f == AuthFactor.PASSWORD_OFF
}
_RETRY_S = 0.25


def entry(
    actor: str,
    action: str,
    *,
    host: str = "",
    address: str = "",
    result: str = "ok",
    detail: dict[str, Any] | None = None,
    at: float | None = None,
) -> dict[str, Any]:
    """Return an audit entry with every field cut to its column's size."""
    return {
        "at": time.time() if at is None else at,
        "actor": (actor or "-")[:100],
        "action": action[:40],
        "host": host[:63],
        "address": address[:64],
        "result": result[:40],
        "detail": detail,
    }


class AuditLog:
    def __init__(
        self,
        db: Database,
        key: bytes | None = None,
        anchor: Path | None = None,
        write_timeout_s: float = 30.0,
    ) -> None:
        self.db, self.key, self.anchor = db, key, anchor
        self.write_timeout_s = write_timeout_s
        self.lock = asyncio.Lock()
        # Entries waiting for the lock, each with the future its caller awaits.
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self.worker: Worker[dict[str, Any]] = Worker("audit", self._write)

    async def record(
        self, actor: str, action: str, *, before_action: bool = False, **fields: Any
    ) -> None:  # fields: host, address, result, detail (see entry())
        """Store one entry before returning, or raise Unavailable (the entry stays queued).

        1. Append it, retrying while the database is busy, for up to write_timeout_s.
        2. Still not stored: hand it to the retrying background writer and raise, so the
           request answers 503 with Retry-After instead of pretending all is well. An
           entry recorded before its action (`before_action`, a login) is queued as
           refused: the caller will not do the action.
        """
        item = entry(actor, action, **fields)
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self._append_retrying(item)
        except TimeoutError:
            if before_action:
                item["result"] = "refused"
                item["detail"] = {**(item["detail"] or {}), "reason": "audit_unavailable"}
            self.worker.put(item)
            log.error(
                "audit: entry not stored in %.0f s, kept queued: %r", self.write_timeout_s, item
            )
            raise Unavailable(
                "the audit log cannot be written right now (database busy or full); "
                "the entry is kept and retried: try again shortly",
                retry_after_s=10,
            ) from None

    def record_later(self, actor: str, action: str, **fields: Any) -> None:
        """Queue one entry for the background writer (retried until stored)."""
        self.worker.put(entry(actor, action, **fields))

    def on_security_event(self, event: SecurityEvent) -> None:
        """Audit refused logins and shared-token migrations (no request waits for these).

        Actions a user takes are recorded by their route, before it answers.
        """
        if event.kind == EventKind.AUTH_FAILURE and event.detail in _LOGIN_FACTORS:
            action = "login"
        elif event.kind == EventKind.ENROLLED and event.detail == AuthFactor.SHARED_TOKEN:
            action = "host_enroll"
        else:
            return
        self.worker.put(
            entry(
                event.user,
                action,
                host=event.host,
                address=event.address,
                result=event.outcome,
                detail={"factor": event.detail} if event.detail else None,
                at=event.at,
            )
        )

    async def _append_retrying(self, item: dict[str, Any]) -> None:
        delay = _RETRY_S
        while True:
            try:
                await self._append_grouped(item)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _append_grouped(self, item: dict[str, Any]) -> None:
        """Store item together with every entry waiting meanwhile (one transaction).

        Whoever holds the lock writes all that is pending; the others find theirs stored
        when their turn comes. A failed write puts the others' entries back; a caller
        that gives up (its timeout) takes its own entry out of the queue.
        """
        done = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        try:
            async with self.lock:
                if done.done():
                    return
                batch, self._pending = self._pending, []
                try:
                    await self._store([i for i, _ in batch])
                except BaseException:
                    self._pending[:0] = [(i, f) for i, f in batch if f is not done]
                    raise
                for _, f in batch:
                    if not f.done():
                        f.set_result(None)
        finally:
            if not done.done():
                self._pending = [(i, f) for i, f in self._pending if f is not done]

    async def _write(self, entries: list[dict[str, Any]]) -> None:
        async with self.lock:
            await self._store(entries)

    async def _store(self, entries: list[dict[str, Any]]) -> None:
        """Append entries in one transaction (the caller holds the lock) and anchor."""
        if not entries:
            return
        stored = await store.append_many(self.db, entries, self.key)
        await self._anchor(stored[-1]["seq"], stored[-1]["hash"])

    async def _anchor(self, seq: int, hash_: str) -> None:
        # The log line is the copy an attacker with the database (and even the data
        # directory) cannot take back once it has been shipped off the machine.
        log.info("audit: head %d:%s", seq, hash_)
        if self.key is None or self.anchor is None:
            return
        try:
            # In a worker thread: replacing a file is about 1 ms of system time here
            # (docs/benchmarks.md, "Sixth pass") that held the loop and every agent with
            # it. Still awaited, under the lock: the anchor is written before the answer,
            # and two heads are never written out of order.
            await asyncio.to_thread(store.write_anchor, self.anchor, self.key, seq, hash_)
        except OSError as exc:
            log.error("audit: cannot write the anchor file %s: %s", self.anchor, exc.strerror)
