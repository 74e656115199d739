"""The event bus across replicas: PostgreSQL LISTEN/NOTIFY behind the two-method interface.

1. `publish` delivers to this process's handlers at once (as the local bus does), then
   waits until the event is in the `bus_events` journal: every publisher waiting at that
   moment shares one statement (an INSERT … RETURNING feeding a NOTIFY), whose NOTIFY
   carries the new rows' id range (a few bytes, far under the 8,000-byte payload limit).
2. What is journalled is a reference, not the event: the codec shrinks a host or command
   event to its id and an output event to its sequence range; the replicas that receive it
   read those rows from their tables and expand it again. Events no table holds (a session
   that ended, an agent to drop) are journalled whole; they are small.
3. Each replica listens on one connection of its own. Notifications arrive in commit
   order, and each origin's rows are committed in id order, so a replica remembers the
   highest id it has read per origin. After its connection drops it reconnects, listens
   again and reads from the journal what it missed (no event lost in the gap, none twice).
4. The journal keeps `retention_s` of events; older rows are pruned by whoever flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.engine import make_url

from nixfleet.storage.bus import Event, Handler, LocalBus
from nixfleet.storage.db import Database
from nixfleet.storage.tables import bus_events

log = logging.getLogger("nixfleet.bus")

CHANNEL = "nixfleet_events"
RETENTION_S = 600.0
_RECONNECT_MAX_S = 5.0
_HEALTH_CHECK_S = 5.0
_FLUSH_MAX = 2000  # events per journal transaction
_WRITE_PATIENCE_S = 15.0
_CATCH_UP_PAGE = 5000
# One origin's rows in an id range, in order (built once: it runs for every notification).
_RANGE = (
    select(bus_events.c.id, bus_events.c.event)
    .where(
        bus_events.c.origin == bindparam("o"),
        bus_events.c.id >= bindparam("first"),
        bus_events.c.id <= bindparam("last"),
    )
    .order_by(bus_events.c.id)
)
# The journal's INSERT and its NOTIFY in one statement, built once: the events go as one
# array parameter, so the statement is the same text whatever their number (a multi-row
# VALUES was compiled anew for each batch size, a tenth of a replica's CPU under load).
# WITH ORDINALITY … ORDER BY keeps the events' order in their ids.
_JOURNAL = text(
    "WITH journal AS ("
    " INSERT INTO bus_events (at, origin, event)"
    " SELECT :at, :origin, CAST(e AS json)"
    " FROM unnest(CAST(:events AS text[])) WITH ORDINALITY AS t(e, i) ORDER BY i"
    " RETURNING id)"
    " SELECT pg_notify(:channel, concat_ws(' ', CAST(:origin AS text), min(id), max(id)))"
    " FROM journal"
)


class Codec(Protocol):
    """How an event becomes a journal entry and back (the dashboard knows its rows)."""

    def shrink(self, event: Event) -> Event: ...

    async def expand(self, refs: Sequence[Event]) -> list[Event | None]:
        """Return one event per reference, in order; None where its row is gone."""
        ...


class WholeEvents:
    """Journal events as they are (for events small enough, and for tests)."""

    def shrink(self, event: Event) -> Event:
        return event

    async def expand(self, refs: Sequence[Event]) -> list[Event | None]:
        return list(refs)


def listen_conninfo(url: str, origin: str) -> str:
    """Return the libpq connection string of the listener, named after its replica."""
    parsed = make_url(url)
    args = parsed.translate_connect_args(database="dbname", username="user")
    query = {k: str(v) for k, v in parsed.query.items()}
    return make_conninfo(**{**args, **query, "application_name": f"nixfleet-bus {origin}"})


class PgBus:
    def __init__(
        self,
        db: Database,
        origin: str,
        codec: Codec | None = None,
        retention_s: float = RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        # Each statement its own transaction (autocommit), for the journal's writes.
        self._unframed = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.origin = origin
        self.codec: Codec = codec or WholeEvents()
        self.retention_s = retention_s
        self.clock = clock
        self._local = LocalBus()
        self._outbox: list[tuple[Event, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pending: dict[str, tuple[int, int]] = {}  # origin → id range still to read
        self._reading: asyncio.Task[None] | None = None
        self._delivering = asyncio.Lock()
        self._seen: dict[str, int] = {}  # origin → highest journal id delivered here
        self._floor = 0  # journal ids up to here existed before this replica listened
        self._pruned_at = 0.0
        self.connected = asyncio.Event()
        self.received = 0  # events from other replicas delivered here (read by /metrics)
        self.reconnects = 0
        self.lost = 0  # events that could not be journalled (read by /metrics)

    # --- the two-method interface ---------------------------------------------------
    async def publish(self, event: Event) -> None:
        await self._local.publish(event)
        if event.get("scope") == "local":
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((self.codec.shrink(event), done))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        await asyncio.shield(done)

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        return self._local.subscribe(handler)

    # --- lifecycle ------------------------------------------------------------------
    async def start(self, codec: Codec | None = None) -> None:
        """Start listening; return once the first LISTEN is in place (or failed once)."""
        if codec is not None:
            self.codec = codec
        async with self.db.reader.connect() as conn:
            self._floor = (await conn.execute(select(func.max(bus_events.c.id)))).scalar() or 0
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 10)

    async def close(self) -> None:
        """Stop listening after the events already published are journalled."""
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await self._flushing
        for task in (self._listener, self._reading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- writing ----------------------------------------------------------------------
    async def _flush(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox[:_FLUSH_MAX], self._outbox[_FLUSH_MAX:]
                await self._write_retrying([ref for ref, _ in batch])
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._flushing = None

    async def _write_retrying(self, refs: list[Event]) -> None:
        """Journal refs, retrying through a short outage (a PostgreSQL restart).

        Past _WRITE_PATIENCE_S the events are given up: local handlers have them, the
        state is in the tables, and publishers must not wait forever.
        """
        deadline = time.monotonic() + _WRITE_PATIENCE_S
        delay = 0.1
        while True:
            try:
                await self._write(refs)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.warning("bus: %d events not sent to other replicas: %s", len(refs), exc)
                    self.lost += len(refs)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _write(self, refs: list[Event]) -> None:
        """Journal refs and notify, in one statement run as its own transaction.

        One round trip instead of BEGIN, INSERT, NOTIFY, COMMIT: the rows and their
        notification still commit together (a NOTIFY is sent when its transaction commits).
        """
        now = self.clock()
        events = [json.dumps(ref) for ref in refs]
        async with self._unframed.connect() as conn:
            await conn.execute(
                _JOURNAL, {"at": now, "origin": self.origin, "events": events, "channel": CHANNEL}
            )
            if now - self._pruned_at > self.retention_s / 10:
                self._pruned_at = now
                old = bus_events.c.at < now - self.retention_s
                await conn.execute(delete(bus_events).where(old))

    # --- reading ----------------------------------------------------------------------
    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    listen_conninfo(self.db.url, self.origin), autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self._catch_up()
                    self.connected.set()
                    delay = 0.1
                    await self._relay(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected.is_set():
                    self.reconnects += 1
                    log.warning("bus: lost the PostgreSQL listener (%s); reconnecting", exc)
                self.connected.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)

    async def _relay(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Note what each notification names; check the connection while it is quiet."""
        while True:
            async for note in conn.notifies(timeout=_HEALTH_CHECK_S):
                origin, first, last = note.payload.split(" ")
                if origin != self.origin:
                    self._note(origin, int(first), int(last))
            await conn.execute("SELECT 1")  # a dead connection raises here

    def _note(self, origin: str, first: int, last: int) -> None:
        """Add a notified id range to what is still to read, and make sure it is read.

        Ranges that arrive while a read is under way are merged, per origin, and read in one
        query: under load the replica reads what piled up in one go instead of paying a
        round trip or two per notification and falling ever further behind (issue 18).
        One origin commits its rows in id order, so the ids between two of its ranges are
        its own rows, notified or about to be.
        """
        self._merge(origin, first, last)
        if self._reading is None:
            self._reading = asyncio.get_running_loop().create_task(self._read_pending())

    async def _read_pending(self) -> None:
        delay = 0.1
        try:
            while self._pending:
                pending, self._pending = self._pending, {}
                try:
                    for origin, (first, last) in pending.items():
                        await self._read(origin, first, last)
                    delay = 0.1
                except Exception as exc:  # PostgreSQL away: keep the ranges and try again
                    log.warning("bus: reading other replicas' events failed (%s); retrying", exc)
                    for origin, (first, last) in pending.items():
                        self._merge(origin, first, last)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RECONNECT_MAX_S)
        finally:
            self._reading = None

    def _merge(self, origin: str, first: int, last: int) -> None:
        lo, hi = self._pending.get(origin, (first, last))
        self._pending[origin] = (min(lo, first), max(hi, last))

    async def _read(self, origin: str, first: int, last: int) -> None:
        # One delivery at a time: the reads of notified ranges and the catch-up after a
        # reconnect run in different tasks, and each must see what the other delivered.
        async with self._delivering:
            await self._read_range(origin, first, last)

    async def _read_range(self, origin: str, first: int, last: int) -> None:
        first = max(first, self._seen.get(origin, self._floor) + 1)
        if first > last:
            return
        async with self.db.reader.connect() as conn:
            rows = list(await conn.execute(_RANGE, {"o": origin, "first": first, "last": last}))
        await self._deliver(origin, rows)

    async def _catch_up(self) -> None:
        """Deliver the journal rows of other replicas this one has not seen yet."""
        after = min([self._floor, *self._seen.values()])
        while True:
            query = (
                select(bus_events.c.id, bus_events.c.origin, bus_events.c.event)
                .where(bus_events.c.id > after, bus_events.c.origin != self.origin)
                .order_by(bus_events.c.id)
                .limit(_CATCH_UP_PAGE)
            )
            async with self._delivering:
                async with self.db.reader.connect() as conn:
                    rows = list(await conn.execute(query))
                by_origin: dict[str, list[Any]] = {}
                for row in rows:
                    if row.id > self._seen.get(row.origin, self._floor):
                        by_origin.setdefault(row.origin, []).append(row)
                for origin, mine in by_origin.items():
                    await self._deliver(origin, mine)
            if len(rows) < _CATCH_UP_PAGE:
                return
            after = rows[-1].id

    async def _deliver(self, origin: str, rows: Sequence[Any]) -> None:
        if not rows:
            return
        events = await self.codec.expand([row.event for row in rows])
        self._seen[origin] = max(self._seen.get(origin, 0), rows[-1].id)
        for event in events:
            if event is not None:
                self.received += 1
                await self._local.publish(event)
