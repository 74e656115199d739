"""Heartbeats are stored in groups: one transaction for every status that arrived meanwhile.

A status costs little to apply but a commit each is what limits a dashboard with thousands
of agents. `StatusWriter.save` returns once the status is on disk (the agent's `status_ack`
promises that), so the order "store, then announce" holds; it just shares the commit with
the statuses that arrived while the previous group was being written (group commit). There
is no timer: a lone heartbeat is written at once, a crowd is written together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Reports = dict[str, tuple[dict[str, Any], float]]  # host id -> (status, received at)


class StatusWriter:
    def __init__(
        self,
        write: Callable[[Reports], Awaitable[None]],
        announce: Callable[[Reports], Awaitable[None]],
    ) -> None:
        self._write = write
        self._announce = announce  # after the waiters are released: acks go out first
        self._pending: Reports = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def save(self, host_id: str, status: dict[str, Any], now: float) -> None:
        """Return once this status (or a newer one for the host) is stored."""
        # A newer status of the same host in the same group replaces the older one.
        self._pending[host_id] = (status, now)
        done = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        """Write groups until nothing is pending, then end (the next save starts a new one)."""
        try:
            while self._pending:
                group, self._pending = self._pending, {}
                waiters, self._waiters = self._waiters, []
                try:
                    await self._write(group)
                except Exception as exc:
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
