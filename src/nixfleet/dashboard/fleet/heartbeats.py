"""Heartbeats are stored in groups: one transaction for many statuses.

A status costs little to apply, but a commit each is what limits a dashboard with thousands
of agents, and on SQLite every commit also competes for the one write lock with the
commands people are waiting for. So:

- a plain heartbeat waits up to `LINGER_S` for company and is written with every other
  status that arrived meanwhile (10,000 agents every 15 s: two commits a second, not 667);
- a status the agent wants acknowledged (`ref`, the benchmark's closed loop) is written at
  once, together with whatever is pending, and `save` returns when it is on disk.

Either way the host update is announced only after its group is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

Reports = dict[str, tuple[dict[str, Any], float]]  # host id -> (status, received at)
LINGER_S = 0.5
log = logging.getLogger("nixfleet.heartbeats")


class StatusWriter:
    def __init__(
        self,
        write: Callable[[Reports], Awaitable[None]],
        announce: Callable[[Reports], Awaitable[None]],
        linger_s: float = LINGER_S,
    ) -> None:
        self._write = write
        self._announce = announce  # after the waiters are released: acks go out first
        self._linger_s = linger_s
        self._pending: Reports = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._now = asyncio.Event()  # someone waits: write without lingering
        self._task: asyncio.Task[None] | None = None

    async def save(self, host_id: str, status: dict[str, Any], now: float, wait: bool) -> None:
        """Queue a status; with wait, write it at once and return once it is stored."""
        # A newer status of the same host in the same group replaces the older one.
        self._pending[host_id] = (status, now)
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        if not wait:
            return
        done = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        self._now.set()
        await done

    async def _drain(self) -> None:
        """Write groups until nothing is pending, then end (the next save starts a new one)."""
        try:
            while self._pending:
                if not self._now.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._now.wait(), self._linger_s)
                self._now.clear()
                group, self._pending = self._pending, {}
                waiters, self._waiters = self._waiters, []
                try:
                    await self._write(group)
                except Exception as exc:
                    log.warning("heartbeats: storing %d statuses failed: %r", len(group), exc)
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                    continue
                for w in waiters:
                    if not w.done():  # the agent may have gone while we wrote
                        w.set_result(None)
                await self._announce(group)
        finally:
            self._task = None
