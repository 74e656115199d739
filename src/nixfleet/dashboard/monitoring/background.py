"""A bounded queue drained by one task: how request paths hand slow work off.

put() never blocks: when the queue is full the item is dropped and counted, so a flood
(a password-guessing run) can cost memory only up to the bound, never request latency.

A batch that fails because the database is busy, locked or full is retried (backing off
to retry_cap_s) until it is stored: a lock held longer than the database's busy timeout
delays items, it does not lose them. An item that can never be stored (a bug, not the
weather) is found by retrying the batch one item at a time, logged whole, and dropped,
so it cannot block the queue behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from nixfleet.storage.db import is_transient

T = TypeVar("T")
log = logging.getLogger("nixfleet.background")


class Worker(Generic[T]):
    def __init__(
        self,
        name: str,
        handle: Callable[[list[T]], Awaitable[None]],
        size: int = 10_000,
        retry_floor_s: float = 0.5,
        retry_cap_s: float = 30.0,
    ) -> None:
        self.name = name
        self.dropped = 0  # refused by a full queue
        self.poisoned = 0  # could never be stored
        self.retries = 0
        self._handle = handle
        self._floor, self._cap = retry_floor_s, retry_cap_s
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=size)
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[T] = []

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def put(self, item: T) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.warning("%s: queue full, %d items dropped so far", self.name, self.dropped)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 500:
                batch.append(self._queue.get_nowait())
            self._inflight = batch
            try:
                await self._store(batch)
                self._inflight = []
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _store(self, batch: list[T]) -> None:
        """Return once the batch is stored, or its unstorable items are logged and dropped."""
        delay = self._floor
        while True:
            try:
                await self._handle(batch)
                return
            except Exception as exc:
                if not is_transient(exc):
                    await self._one_by_one(batch)
                    return
                self.retries += 1
                log.warning(
                    "%s: %d items wait: the database refused them (%s); retry in %.1f s",
                    self.name,
                    len(batch),
                    type(exc).__name__,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(self._cap, delay * 2)

    async def _one_by_one(self, batch: list[T]) -> None:
        for item in batch:
            try:
                await self._handle([item])
            except Exception as exc:
                if is_transient(exc):
                    await self._store([item])
                    continue
                self.poisoned += 1
                log.exception("%s: dropped an item that cannot be stored: %r", self.name, item)

    async def shutdown(self, grace_s: float = 5.0) -> None:
        """Handle what is queued (for up to grace_s), log what is left, then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        left = [*self._inflight, *(self._queue.get_nowait() for _ in range(self._queue.qsize()))]
        for item in left:
            # The last copy is the log: the database would not take it in time.
            log.error("%s: not stored at shutdown: %r", self.name, item)
