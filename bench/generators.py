"""Simulated agents spread over several generator processes (`SpreadSwarm`).

One process cannot hold more sockets than its open-file limit (20,000 hard on the bench
machine, not raisable there), so a fleet larger than `PER_PROCESS` agents is split: each
generator process (multiprocessing, spawn) runs an ordinary `Swarm` of `SimAgent`s for
its share (bench/swarm.py: same handshake, heartbeats, answers to commands) and reports
what they observed to the bench process over one queue, in batches every `FLUSH_S`:

- ("cmd", command id, arrival, host id): a command reached an agent;
- ("fin", command id, sent): its `finished` left;
- ("hb", count), ("fail", text), ("retry", total, last): heartbeats, failures, retries.

Arrival times are `time.monotonic()` taken in the generator the moment the frame is read,
so the batching delays only when the bench process learns of an arrival, never the
latency it computes (POST in the bench process → arrival in a generator). On Linux
`time.monotonic()` is `clock_gettime(CLOCK_MONOTONIC)` (see `time.get_clock_info`), one
clock for every process of the machine (of one time namespace, which parent and child
share), so the two stamps compare. This is checked, not assumed: each generator's first
message carries its clock, which must fall between the parent's clock before the spawn
and after the message arrived (`ClockMismatch` otherwise).

Everything is bounded: a generator exits by itself after `lifetime_s`, or when its
parent is gone, and `close()` stops, joins and (if it must) kills them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from bench.swarm import Swarm

# Agents per generator process: well under a 20,000 open-file limit (smaller: smoke runs).
PER_PROCESS = int(os.environ.get("NIXFLEET_BENCH_PER_PROCESS", "8000"))
FLUSH_S = 0.02
PARALLEL = 64  # handshakes at a time per replica, over all generators (as one Swarm does)


class ClockMismatch(RuntimeError):
    """A generator's monotonic clock is not the bench process's: latencies would be wrong."""


def processes_for(n: int) -> int:
    """Return how many generator processes carry n agents (1 up to PER_PROCESS)."""
    return max(1, math.ceil(n / PER_PROCESS))


class _Relay(Swarm):
    """A generator's own swarm: what its agents observe also goes into an outbox."""

    def __init__(self, tokens: dict[str, str]) -> None:
        super().__init__("", tokens)
        self.outbox: list[tuple[Any, ...]] = []

    def note_command(self, command_id: str, at: float, host_id: str = "") -> None:
        super().note_command(command_id, at, host_id)
        self.outbox.append(("cmd", command_id, at, host_id))

    def note_finished(self, command_id: str, at: float) -> None:
        super().note_finished(command_id, at)
        self.outbox.append(("fin", command_id, at))


def _generator(
    index: int,
    plan: list[tuple[str, str]],
    tokens: dict[str, str],
    events: Any,
    stop: Any,
    parallel: int,
    timeout: float,
    lifetime_s: float,
) -> None:
    """A generator process's body: connect `plan` (host id, url), then report until stopped."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    events.put([("hello", index, time.monotonic())])
    asyncio.run(_generate(index, plan, tokens, events, stop, parallel, timeout, lifetime_s))


async def _generate(
    index: int,
    plan: list[tuple[str, str]],
    tokens: dict[str, str],
    events: Any,
    stop: Any,
    parallel: int,
    timeout: float,
    lifetime_s: float,
) -> None:
    parent = os.getppid()
    end = time.monotonic() + lifetime_s
    swarm = _Relay(tokens)
    by_url: dict[str, list[str]] = {}
    for host_id, url in plan:
        by_url.setdefault(url, []).append(host_id)
    sent_failures = sent_heartbeats = sent_retries = 0

    def flush(extra: list[tuple[Any, ...]]) -> None:
        nonlocal sent_failures, sent_heartbeats, sent_retries
        batch, swarm.outbox = swarm.outbox, []
        if swarm.heartbeats_sent != sent_heartbeats:
            batch.append(("hb", swarm.heartbeats_sent - sent_heartbeats))
            sent_heartbeats = swarm.heartbeats_sent
        batch += [("fail", f) for f in swarm.failures[sent_failures:]]
        sent_failures = len(swarm.failures)
        if swarm.connect_retries != sent_retries:
            batch.append(("retry", index, swarm.connect_retries, swarm.last_retry))
            sent_retries = swarm.connect_retries
        batch += extra
        if batch:
            events.put(batch)

    async def reporter() -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            flush([])

    task = asyncio.create_task(reporter())
    try:
        try:
            seconds = max(
                await asyncio.gather(
                    *(swarm.connect(ids, parallel, timeout, url) for url, ids in by_url.items())
                )
            )
        except Exception as exc:
            flush([("error", index, repr(exc)[:300])])
            return
        flush([("connected", index, seconds, swarm.size(), swarm.heartbeat_interval())])
        while not stop.is_set() and time.monotonic() < end and os.getppid() == parent:
            await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await swarm.close()
        flush([("closed", index)])


@dataclass
class SpreadSwarm(Swarm):
    """A `Swarm` whose agents live in generator processes; read like one `Swarm`."""

    connected: int = 0
    heartbeat: float | None = None
    processes: list[BaseProcess] = field(default_factory=list)
    _spawned_at: float = 0.0
    _ready: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    _closed: set[int] = field(default_factory=set)
    _retries: dict[int, int] = field(default_factory=dict)  # generator -> its retries
    _stop: Any = None
    _events: Any = None
    _reader: threading.Thread | None = None
    _reading: bool = False

    def size(self) -> int:
        return self.connected

    def heartbeat_interval(self) -> float | None:
        return self.heartbeat

    async def connect_spread(
        self, plan: list[tuple[str, str]], timeout: float, lifetime_s: float
    ) -> float:
        """Connect every (host id, url) of `plan` from `processes_for(len(plan))` processes.

        Return the seconds until every generator had its share connected. Raise if one
        failed, died, or the clocks disagree.
        """
        start = time.monotonic()
        count = processes_for(len(plan))
        urls = {url for _, url in plan}
        # Each replica takes PARALLEL handshakes at a time in all, as with one generator.
        parallel = max(1, PARALLEL // count)
        ctx = mp.get_context("spawn")  # no fork of a process with threads and a loop
        self._events, self._stop = ctx.Queue(), ctx.Event()
        loop = asyncio.get_running_loop()
        self._ready = {i: loop.create_future() for i in range(count)}
        self._reading = True
        self._reader = threading.Thread(target=self._read, args=(loop,), daemon=True)
        self._reader.start()
        self._spawned_at = time.monotonic()
        for i in range(count):
            share = plan[i::count]
            tokens = {h: self.tokens[h] for h, _ in share}
            proc = ctx.Process(
                target=_generator,
                args=(i, share, tokens, self._events, self._stop, parallel, timeout, lifetime_s),
                name=f"bench-generator-{i}",
                daemon=True,
            )
            proc.start()
            self.processes.append(proc)
        deadline = start + timeout
        print(f"bench: {count} generator processes for {len(plan)} agents on {len(urls)} url(s)")
        while not all(f.done() for f in self._ready.values()):
            dead = [p.name for p in self.processes if p.exitcode is not None]
            if dead:
                raise RuntimeError(f"bench: generator process(es) {dead} exited while connecting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench: agents not connected within {timeout} s")
            await asyncio.wait(list(self._ready.values()), timeout=1)
        for f in self._ready.values():
            f.result()  # raises the first generator's failure
        return time.monotonic() - start

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._reading:
            try:
                batch = self._events.get(timeout=0.5)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            received = time.monotonic()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to tell
                loop.call_soon_threadsafe(self._apply, batch, received)

    def _apply(self, batch: list[tuple[Any, ...]], received: float) -> None:
        for event in batch:
            kind = event[0]
            if kind == "cmd":
                self.note_command(event[1], event[2], event[3])
            elif kind == "fin":
                self.note_finished(event[1], event[2])
            elif kind == "hb":
                self.heartbeats_sent += event[1]
            elif kind == "fail":
                self.failures.append(event[1])
            elif kind == "retry":
                self._retries[event[1]] = event[2]
                self.connect_retries = sum(self._retries.values())
                self.last_retry = event[3]
            elif kind == "hello":
                _, index, clock = event
                if not self._spawned_at <= clock <= received:
                    self._fail(index, ClockMismatch(f"generator {index}: monotonic {clock}"))
            elif kind == "connected":
                _, index, _seconds, size, heartbeat = event
                self.connected += size
                self.heartbeat = heartbeat
                fut = self._ready[index]
                if not fut.done():
                    fut.set_result(None)
            elif kind == "error":
                self._fail(event[1], RuntimeError(f"bench: generator {event[1]}: {event[2]}"))
            elif kind == "closed":
                self._closed.add(event[1])

    def _fail(self, index: int, exc: Exception) -> None:
        fut = self._ready.get(index)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    async def close(self) -> None:
        """Stop every generator (their agents close their connections), join, then kill."""
        if self._stop is not None:
            self._stop.set()
        for proc in self.processes:
            await asyncio.to_thread(proc.join, 60)
            if proc.exitcode is None:
                proc.kill()
                await asyncio.to_thread(proc.join, 10)
        self._reading = False
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 2)
        for f in self._ready.values():
            if f.done() and not f.cancelled():
                f.exception()  # retrieved: no "never retrieved" warning at exit
