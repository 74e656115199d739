"""Simulated browser tabs: each follows /api/events (Server-Sent Events) as the page does.

A tab parses only what the benchmark needs: `output` events, whose lines carry the time the
simulated agent sent them (`bench-t=<monotonic>`). Every line received is one latency
sample (agent send → this tab); per line, the slowest tab gives "received by every browser".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from bench.swarm import OUTPUT_MARK


@dataclass
class Browsers:
    client: httpx.AsyncClient  # holds the session cookie
    count: int
    ready: int = 0
    events: int = 0
    # (command id, seq) -> latency in seconds, one per tab that received it
    lines: dict[tuple[str, int], list[float]] = field(default_factory=lambda: defaultdict(list))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def open(self, timeout: float = 60) -> None:
        """Open the tabs and return once each has its first snapshot."""
        self.tasks = [asyncio.create_task(self._follow(i)) for i in range(self.count)]
        deadline = time.monotonic() + timeout
        while self.ready < self.count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench: only {self.ready}/{self.count} browsers got a snapshot")
            if self.errors:
                raise RuntimeError(f"bench: browser failed: {self.errors[0]}")
            await asyncio.sleep(0.05)

    async def _follow(self, _tab: int) -> None:
        try:
            async with self.client.stream("GET", "/api/events", timeout=None) as res:
                if res.status_code != 200:
                    self.errors.append(f"HTTP {res.status_code}")
                    return
                kind = ""
                async for line in res.aiter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        self.events += 1
                        if kind == "output":
                            self._on_output(line[6:])
                        elif kind == "snapshot":
                            self.ready += 1
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self.errors.append(repr(exc))

    def _on_output(self, data: str) -> None:
        now = time.monotonic()
        event = json.loads(data)
        for ln in event["lines"]:
            text = ln["text"]
            if text.startswith(OUTPUT_MARK):
                sent = float(text[len(OUTPUT_MARK) :].split(" ", 1)[0])
                self.lines[(event["command_id"], ln["seq"])].append(now - sent)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await t
