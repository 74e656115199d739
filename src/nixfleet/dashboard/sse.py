"""Server-Sent Events for browsers: a snapshot on connect, then ordered deltas.

Each browser has a queue bounded in events and in bytes (NIXFLEET_SSE_QUEUE_BYTES: a few
large output events must not cost what a thousand would). The broadcaster never awaits a
browser: it takes a copy of the subscriber set (the only shared state it touches; in one
event loop no lock is needed, and none is ever held while a browser is written to) and
offers each event with put_nowait. A full queue drops the event and marks the browser
slow; once it has drained its queue it gets a `resync` (a fresh snapshot). So one stalled
tab neither blocks the others nor grows memory without bound.

When a session ends (logout, log out everywhere, expiry) its streams end: a reading one
gets `session_ended`; a stalled one, blocked writing to a browser that does not read, is
cut at the connection (`abort`, from the server's protocol) after END_GRACE_S.

Event ids are contiguous. They start at the process's start time in milliseconds, so ids
from an earlier dashboard process are older than anything this one holds. The last
`replay_size` events (at most `replay_bytes`) stay in a ring: a browser reconnecting with
`Last-Event-ID` gets the events it missed, or a `resync` when they are no longer all there.

An event is JSON-encoded only when a browser needs it, and then once: when it is offered to
the streams open at the time, or when a reconnecting browser replays it. Until the first
stream opens no browser holds an id of this process, so nothing is kept for replay; while
no stream is open the ring keeps events unencoded, counted by an estimate of their size.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nixfleet.config import Settings
from nixfleet.core import jsontext
from nixfleet.storage import api_tokens as token_store
from nixfleet.storage import sessions as session_store
from nixfleet.storage.bus import Event, EventBus
from nixfleet.storage.db import Database

if TYPE_CHECKING:
    from nixfleet.dashboard.streamseats import SharedSeats

# Events for agents' eyes only never reach a browser.
_PRIVATE = frozenset({"agent_control", "session_ended", "throttle"})
# How long an ended stream may take to notice before its connection is cut.
END_GRACE_S = 2.0


@dataclass(frozen=True)
class StreamLimits:
    queue_size: int = 1000
    replay_size: int = 1000
    keepalive_s: float = 15.0
    per_session: int = 8
    per_address: int = 32
    queue_bytes: int = 8 << 20
    replay_bytes: int = 16 << 20
    total: int = 2000

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamLimits:
        return cls(
            settings.sse_queue_size,
            settings.sse_replay_size,
            settings.sse_keepalive_s,
            settings.sse_max_per_session,
            settings.sse_max_per_address,
            settings.sse_queue_bytes,
            settings.sse_replay_bytes,
            settings.sse_max_total,
        )


class Subscriber:
    def __init__(
        self,
        size: int,
        session: str,
        address: str = "",
        max_bytes: int = 8 << 20,
        abort: Callable[[], None] | None = None,
        seat: str | None = None,
    ) -> None:
        self.queue: asyncio.Queue[tuple[int, Event, int]] = asyncio.Queue(maxsize=size)
        self.needs_resync = False  # "slow": it missed an event and must start over
        self.session = session
        self.address = address
        self.ended = False
        self.closed = False
        self.dropped = 0
        self.queued_bytes = 0
        self.max_bytes = max_bytes
        self._abort = abort
        self.seat = seat  # its place under the caps shared by replicas (streamseats.py)

    def end(self) -> None:
        """Stop this stream; the marker wakes a reader blocked on an empty queue.

        A reader blocked on a browser that does not read never sees it: its connection
        is aborted after END_GRACE_S.
        """
        self.ended = True
        try:
            self.queue.put_nowait((0, {"type": "session_ended"}, 0))
        except asyncio.QueueFull:
            pass  # a full queue wakes the reader anyway, and it checks `ended` first
        if self._abort is not None:
            asyncio.get_running_loop().call_later(END_GRACE_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self.closed and self._abort is not None:
            self._abort()

    def offer(self, seq: int, event: Event, size: int = 0) -> bool:
        """Queue the event; return False if it was dropped (the browser will resync)."""
        if self.needs_resync:
            self.dropped += 1
            return False
        if self.queued_bytes + size > self.max_bytes:
            self.needs_resync = True
            self.dropped += 1
            return False
        try:
            self.queue.put_nowait((seq, event, size))
        except asyncio.QueueFull:
            self.needs_resync = True
            self.dropped += 1
            return False
        self.queued_bytes += size
        return True


class Broadcaster:
    def __init__(self, bus: EventBus, limits: StreamLimits | Settings) -> None:
        if isinstance(limits, Settings):
            limits = StreamLimits.from_settings(limits)
        self.limits = limits
        self.subscribers: set[Subscriber] = set()
        self.seq = int(time.time() * 1000)
        self.recent: deque[tuple[int, Event, int]] = deque(maxlen=limits.replay_size)
        self.recent_bytes = 0
        self.slow_total = 0
        self.dropped = 0  # events not delivered to some browser (read by /metrics)
        # False until the first stream opens: before it, no Last-Event-ID of ours exists.
        self._replayable = False
        # seq → frame text: an event is JSON-encoded once, not once per browser (with 100
        # browsers and 1,000 agents heartbeating that was most of the dashboard's CPU).
        self._frames: OrderedDict[int, str] = OrderedDict()
        self._frames_max = max(limits.queue_size, limits.replay_size, 1)
        self._frames_bytes = 0
        self._unsubscribe = bus.subscribe(self._on_event)
        # On PostgreSQL the caps count every replica's streams (set by create_app).
        self.seats: SharedSeats | None = None

    def close(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: Event) -> None:
        if event["type"] == "session_ended":
            # A logged-out session must stop receiving fleet state at once.
            for sub in tuple(self.subscribers):
                if sub.session == event["id_hash"]:
                    sub.end()
        if event["type"] in _PRIVATE:
            return
        self.seq += 1
        if not self.subscribers:
            # No browser to send it to now: kept for one that comes back, encoded if it does.
            if self._replayable and self.limits.replay_size:
                self._remember(self.seq, event, estimated_size(event))
            return
        size = len(self._encoded(self.seq, event))
        self._remember(self.seq, event, size)
        for sub in tuple(self.subscribers):
            was_slow = sub.needs_resync
            if not sub.offer(self.seq, event, size):
                self.dropped += 1
            self.slow_total += sub.needs_resync and not was_slow

    async def end_dead_sessions(self, db: Database) -> None:
        """End the streams whose session was deleted, whose user was disabled, or whose API
        token was revoked or expired elsewhere (`nixfleet admin user disable` and `admin
        token revoke` run in another process, off this bus)."""
        sessions = {s.session for s in self.subscribers if not s.session.startswith("token:")}
        token_ids = {s.session[6:] for s in self.subscribers if s.session.startswith("token:")}
        if not sessions and not token_ids:
            return
        live = await session_store.live_of(db, sessions) if sessions else set()
        live_tokens = await token_store.live_of(db, token_ids, time.time())
        asked = {*sessions, *(f"token:{t}" for t in token_ids)}
        live = {*live, *(f"token:{t}" for t in live_tokens)}
        for sub in tuple(self.subscribers):  # a stream opened meanwhile was not asked about
            if sub.session in asked and sub.session not in live:
                sub.end()

    def _remember(self, seq: int, event: Event, size: int) -> None:
        """Keep the event for Last-Event-ID replay, within the ring's count and bytes.

        size is the frame's length when it was encoded, else estimated_size(event).
        """
        if not self.recent.maxlen:
            return
        if len(self.recent) == self.recent.maxlen:
            self.recent_bytes -= self.recent[0][2]
        self.recent.append((seq, event, size))
        self.recent_bytes += size
        while self.recent_bytes > self.limits.replay_bytes and self.recent:
            self.recent_bytes -= self.recent.popleft()[2]

    def refusal(self, session: str, address: str) -> str | None:
        """Return why one more stream for this session and address is refused, or None."""
        sessions = Counter(sub.session for sub in self.subscribers)
        if sessions[session] >= self.limits.per_session:
            return f"this session already has {self.limits.per_session} open event streams"
        addresses = Counter(sub.address for sub in self.subscribers)
        if addresses[address] >= self.limits.per_address:
            return f"this address already has {self.limits.per_address} open event streams"
        if len(self.subscribers) >= self.limits.total:
            return f"the dashboard already serves {self.limits.total} open event streams"
        return None

    async def admit(self, session: str, address: str) -> tuple[str | None, str | None]:
        """Return (seat, None) if one more stream may open, else (None, why not).

        This process's own streams are checked first; with replicas, a seat in the
        database then counts the streams of all of them (the seat is None without).
        """
        refusal = self.refusal(session, address)
        if refusal or self.seats is None:
            return None, refusal
        return await self.seats.take(session, address)

    def missed(self, last_id: int) -> list[tuple[int, Event]] | None:
        """Return the events after last_id, or None when the ring no longer holds them all."""
        oldest = self.recent[0][0] if self.recent else self.seq + 1
        if not oldest - 1 <= last_id <= self.seq:
            return None
        return [(seq, event) for seq, event, _ in self.recent if seq > last_id]

    async def stream(
        self,
        session: str,
        snapshot: Callable[[], Awaitable[dict[str, Any]]],
        still_valid: Callable[[], Awaitable[bool]],
        address: str = "",
        last_event_id: int | None = None,
        abort: Callable[[], None] | None = None,
        seat: str | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield SSE frames for one browser until it goes away or its session ends.

        1. Check the stream limits and subscribe, with no await in between, so no event
           falls between the replay (or snapshot) and the queue, and the limits hold.
        2. Send the missed events (Last-Event-ID), else a snapshot (`resync` if the
           browser asked for events we no longer hold).
        3. Relay the queue; keep-alive comments while idle; `resync` after a drop.
        """
        if self.refusal(session, address):
            # Only reachable in a race with another stream opening (the route checks first).
            if seat is not None and self.seats is not None:
                self.seats.give_back(seat)
            yield "event: too_many_streams\ndata: {}\n\n"
            return
        missed = None if last_event_id is None else self.missed(last_event_id)
        limits = self.limits
        sub = Subscriber(limits.queue_size, session, address, limits.queue_bytes, abort, seat)
        self.subscribers.add(sub)
        self._replayable = True
        at = self.seq
        try:
            yield "retry: 2000\n\n"
            if missed is not None:
                for seq, event in missed:
                    yield self._encoded(seq, event)
            else:
                kind = "snapshot" if last_event_id is None else "resync"
                yield _frame(at, kind, await snapshot())
            while True:
                item = await self._next(sub)
                if item is None:
                    # Idle and absolute expiry apply to open streams too.
                    if await still_valid():
                        yield ": keep-alive\n\n"
                        continue
                    sub.end()
                if sub.ended or item is None:
                    yield "event: session_ended\ndata: {}\n\n"
                    return
                seq, event, size = item
                sub.queued_bytes -= size
                yield self._encoded(seq, event)
                if sub.needs_resync and sub.queue.empty():
                    at = self.seq
                    sub.needs_resync = False
                    yield _frame(at, "resync", await snapshot())
        finally:
            sub.closed = True
            self.subscribers.discard(sub)
            if seat is not None and self.seats is not None:
                self.seats.give_back(seat)

    def _encoded(self, seq: int, event: Event) -> str:
        """Return the frame of a broadcast event, encoding it only the first time."""
        frame = self._frames.get(seq)
        if frame is None:
            frame = self._frames[seq] = _frame(seq, event["type"], event)
            self._frames_bytes += len(frame)
            while len(self._frames) > 1 and (
                len(self._frames) > self._frames_max or self._frames_bytes > self.limits.queue_bytes
            ):
                # The oldest first (insertion order); never the one just made.
                self._frames_bytes -= len(self._frames.popitem(last=False)[1])
        return frame

    async def _next(self, sub: Subscriber) -> tuple[int, Event, int] | None:
        """Return the next queued event, or None after keepalive_s without one."""
        try:
            async with asyncio.timeout(self.limits.keepalive_s):
                return await sub.queue.get()
        except TimeoutError:
            return None


def _frame(seq: int, kind: str, data: dict[str, Any]) -> str:
    return f"id: {seq}\nevent: {kind}\ndata: {jsontext.dumps(data)}\n\n"


def estimated_size(event: Event) -> int:
    """Return about how many bytes the event holds, without encoding it as JSON.

    Its pickled length: every string's bytes (UTF-8) and a few bytes per other value, so it
    grows with every byte a large event carries, and the ring's byte bound still bounds what
    the ring holds. Pickling is C code that needs no text escaped and no float formatted: a
    fifth to a sixth of the cost of `jsontext.dumps` for a host or command event.
    """
    try:
        return len(pickle.dumps(event, pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        return len(jsontext.dumps(event))  # not expected: events are JSON values
