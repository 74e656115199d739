"""A bounded queue drained by one task: how request paths hand slow work off.

put() never blocks: when the queue is full the item is dropped and counted, so a flood
(a password-guessing run) can cost memory only up to the bound, never request latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("nixfleet.background")


class Worker(Generic[T]):
    def __init__(
        self, name: str, handle: Callable[[list[T]], Awaitable[None]], size: int = 10_000
    ) -> None:
        self.name = name
        self.dropped = 0
        self._handle = handle
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=size)
        self._task: asyncio.Task[None] | None = None

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
            try:
                await self._handle(batch)
            except Exception:
                log.exception("%s: failed to handle %d items", self.name, len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def shutdown(self, grace_s: float = 5.0) -> None:
        """Handle what is queued (for up to grace_s), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
