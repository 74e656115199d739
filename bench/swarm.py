"""Simulated agents: real WebSocket connections speaking the agent protocol (core.protocol).

Each `SimAgent` connects like the real agent (same headers, same `websockets` client options,
so the same compression and keepalive), sends `hello`, waits for `welcome`, then:

- heartbeats a `status` every `heartbeat_s` from the welcome (first one at a random offset,
  so N agents spread out as real ones do);
- on `command`: records when it arrived (and at which host), answers `started`, optionally
  streams `output` lines whose text carries the send time, runs for the swarm's `run_s`
  (a random time in that range, none by default), and sends `finished` (succeeded), so the
  host frees up; the moment each `finished` leaves is recorded too;
- in closed-loop mode (`ingest`) sends the next `status` with a `ref` the moment the
  dashboard's `status_ack` for the previous one arrives, and records the round trip.

Messages the agent sends are encoded once per agent (status) or built by the protocol
models, so the generator spends its CPU on the wire and not on pydantic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nixfleet.agent.transport import PONG_WAIT_S
from nixfleet.core.framing import PROTOCOL_VERSION
from nixfleet.core.protocol import (
    Finished,
    Hello,
    HostStatus,
    Output,
    OutputLine,
    Started,
    Status,
)

OUTPUT_MARK = "bench-t="
RETRIES = 5  # handshakes a simulated agent tries before the run fails


@dataclass
class OutputPlan:
    """What a simulated agent does with a `command`: lines to stream before finishing."""

    lines: int = 0
    interval_s: float = 0.0


@dataclass
class Swarm:
    """Every simulated agent of one run and what they observed."""

    ws_url: str
    tokens: dict[str, str]
    agents: dict[str, SimAgent] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)  # command id -> monotonic
    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    output_plan: OutputPlan = field(default_factory=OutputPlan)
    run_s: tuple[float, float] = (0.0, 0.0)  # a command's run time: uniform in this range
    command_hosts: dict[str, str] = field(default_factory=dict)  # command id -> host id
    finished_sent: dict[str, float] = field(default_factory=dict)  # command id -> monotonic
    heartbeats_sent: int = 0
    failures: list[str] = field(default_factory=list)
    connect_retries: int = 0
    last_retry: str = ""

    async def connect(
        self, ids: list[str], parallel: int = 64, timeout: float = 300, url: str = ""
    ) -> float:
        """Connect the agents for ids, `parallel` handshakes at a time; return seconds taken.

        They dial `url`, or the swarm's `ws_url` (several replicas: one call per replica).
        """
        start = time.monotonic()
        gate = asyncio.Semaphore(parallel)

        async def one(host_id: str) -> None:
            async with gate:
                for attempt in range(RETRIES + 1):
                    agent = SimAgent(self, host_id, url)
                    self.agents[host_id] = agent
                    try:
                        await agent.start()
                        return
                    except (InvalidStatus, ConnectionClosed) as exc:
                        # A busy database answers 503 (or drops a half-open link): the real
                        # agent backs off and dials again, and so does this one, counted.
                        await agent.close()
                        if attempt == RETRIES:
                            raise
                        self.connect_retries += 1
                        self.last_retry = f"{host_id}: {exc!r}"[:200]
                        await asyncio.sleep(1 + attempt)

        await asyncio.wait_for(asyncio.gather(*(one(h) for h in ids)), timeout)
        return time.monotonic() - start

    def size(self) -> int:
        """Return how many simulated agents this swarm holds."""
        return len(self.agents)

    def heartbeat_interval(self) -> float | None:
        """Return the heartbeat period the dashboard gave the agents (None before any)."""
        return next(iter(self.agents.values())).heartbeat_s if self.agents else None

    def note_finished(self, command_id: str, at: float) -> None:
        self.finished_sent[command_id] = at

    def note_command(self, command_id: str, at: float, host_id: str = "") -> None:
        self.received[command_id] = at
        self.command_hosts[command_id] = host_id
        fut = self.waiters.get(command_id)
        if fut is not None and not fut.done():
            fut.set_result(at)

    async def wait_command(self, command_id: str, timeout: float) -> float:
        """Return the monotonic time the command reached its agent."""
        if command_id in self.received:
            return self.received[command_id]
        fut = self.waiters.setdefault(command_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    async def close(self) -> None:
        await asyncio.gather(*(a.close() for a in self.agents.values()), return_exceptions=True)


class SimAgent:
    def __init__(self, swarm: Swarm, host_id: str, url: str = "") -> None:
        self.swarm = swarm
        self.host_id = host_id
        self.url = url
        self.ws: ClientConnection | None = None
        self.heartbeat_s = 15.0
        self.tasks: set[asyncio.Task[None]] = set()
        status = HostStatus(hostname=host_id, os_kind="nixos", agent_version="bench")
        self.status_json = Status(status=status).model_dump_json()
        # '{…}' without ref and the closing brace: a closed-loop status appends its ref.
        self._status_prefix = Status(status=status).model_dump_json(exclude={"ref"})[:-1]
        self._hello = Hello(
            protocol=PROTOCOL_VERSION, host_id=host_id, agent_version="bench", status=status
        ).model_dump_json()
        # closed loop (ingest)
        self.looping = False
        self.ref = 0
        self.sent_at = 0.0
        self.acks: list[float] = []  # round trips, seconds

    async def start(self) -> None:
        headers = {
            "Authorization": f"Bearer {self.swarm.tokens[self.host_id]}",
            "X-NixFleet-Host": self.host_id,
        }
        # The real agent's options (agent/daemon.py), so compression and pings match.
        self.ws = await connect(
            self.url or self.swarm.ws_url,
            additional_headers=headers,
            open_timeout=60,
            max_size=2**20,
            ping_interval=20,
            ping_timeout=PONG_WAIT_S,
        )
        await self.ws.send(self._hello)
        welcome = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"bench: {self.host_id} got {welcome} instead of welcome")
        self.heartbeat_s = float(welcome["heartbeat_s"])
        self._spawn(self._receive())
        self._spawn(self._heartbeat())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for t in tuple(self.tasks):
            t.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)

    async def _heartbeat(self) -> None:
        await asyncio.sleep(random.uniform(0, self.heartbeat_s))
        while True:
            if not self.looping:
                try:
                    await self._send(self.status_json)
                except ConnectionClosed:
                    return  # counted in failures; nothing else to do for a closed link
                self.swarm.heartbeats_sent += 1
            await asyncio.sleep(self.heartbeat_s)

    async def _send(self, text: str) -> None:
        assert self.ws is not None
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            self.swarm.failures.append(f"{self.host_id}: connection closed on send")
            raise

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                kind = msg["type"]
                if kind == "status_ack":
                    await self._on_status_ack(msg)
                elif kind == "command":
                    self.swarm.note_command(msg["command_id"], time.monotonic(), self.host_id)
                    # Its own task, like the real agent's runner: never block the reader.
                    self._spawn(self._run(msg["command_id"]))
        except ConnectionClosed as exc:
            self.swarm.failures.append(f"{self.host_id}: closed by dashboard ({exc.rcvd})")

    # --- commands ---------------------------------------------------------------------
    async def _run(self, command_id: str) -> None:
        started = time.time()
        await self._send(Started(command_id=command_id, started_at=started).model_dump_json())
        plan = self.swarm.output_plan
        for seq in range(1, plan.lines + 1):
            text = f"{OUTPUT_MARK}{time.monotonic():.6f} line {seq}"
            line = OutputLine(seq=seq, stream="stdout", text=text)
            await self._send(Output(command_id=command_id, lines=[line]).model_dump_json())
            await asyncio.sleep(plan.interval_s)
        if self.swarm.run_s[1] > 0:
            await asyncio.sleep(random.uniform(*self.swarm.run_s))
        finished = Finished(
            command_id=command_id,
            result="succeeded",
            exit_code=0,
            duration_s=time.time() - started,
            last_seq=plan.lines,
        )
        text = finished.model_dump_json()
        self.swarm.note_finished(command_id, time.monotonic())
        await self._send(text)

    # --- closed-loop heartbeats ---------------------------------------------------------
    async def loop_status(self) -> None:
        """Start the closed loop: the next status goes out when the last one is acked."""
        self.looping = True
        await self._send_ref()

    async def _send_ref(self) -> None:
        self.ref += 1
        self.sent_at = time.monotonic()
        await self._send(f'{self._status_prefix},"ref":{self.ref}}}')

    async def _on_status_ack(self, msg: dict[str, object]) -> None:
        if msg.get("ref") != self.ref:
            return
        self.acks.append(time.monotonic() - self.sent_at)
        if self.looping:
            await self._send_ref()

    def stop_loop(self) -> None:
        self.looping = False
