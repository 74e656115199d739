"""SQLite through aiosqlite with one trip to the database thread per statement.

aiosqlite runs each SQLite call in a thread of its own; every call is a trip there and back
(a future, a queue, a wake-up of the event loop). SQLAlchemy's aiosqlite adapter makes five
for one read: open a cursor, execute, fetch, close the cursor, and the rollback with which
the pool takes the connection back. At 1,000 agents those trips were most of the
dashboard's CPU per command (py-spy, docs/benchmarks.md "Lighter").

Here a statement that goes to the thread makes one trip (its cursor, execution, rows and
close are one function run there), and a commit or rollback with no transaction open is
not sent at all: Python's sqlite3 does nothing for either then (it checks the same flag,
`in_transaction`, which is safe to read from this thread while no call of this connection
is under way, and none is: SQLAlchemy awaits each one). Everything else is SQLAlchemy's
own aiosqlite adapter.

A statement runs in the event loop's own thread, no trip at all: handing it to the thread
and its result back (a queue put that wakes the thread, the GIL passed over and back, the
loop woken through its self-pipe) cost more CPU than SQLite's work for a one-row read or
write (a prebuilt host read: 290 us of CPU and 520 us of wall time through the thread, 186
us and 260 us here; during dispatch py-spy put a fifth of the dashboard's GIL samples on the
hand-off, and after reads stopped making it, 18 % on the writes' hand-offs). The connection
is opened with check_same_thread off (sqlite3's connections are serialized).

What it must not do there is wait: a statement waiting in SQLite's busy handler would hold
the whole loop. So the connection's own busy timeout stays 0, and the timeout the database
asks for (`PRAGMA busy_timeout`, `db._sqlite_pragmas`) is kept as the wait of a trip to the
thread: a statement that finds the write lock taken (another process, or another of this
process's transactions between two of its statements) fails at once with SQLITE_BUSY,
having done nothing, and is run again in the thread, where it waits as before. A reader in
WAL mode takes no lock a writer holds, so a read nearly never goes there.

Some work goes to the thread first (`_here_first`): a DELETE, whose size has no bound the
caller sees, and a batch of many rows; the thread lets the loop go on while SQLite works.
So does every commit: it may run a WAL checkpoint, whose fsync must not hold the loop.
A statement that returns many rows fetches only its first `INLINE_ROWS` here and the rest
in the thread, so a large listing does not hold the loop for long.

It subclasses SQLAlchemy's private adapter classes as they are in its 2.1 releases (on 2.0
it does not take effect: four trips per read). On any other minor release `dbapi()` returns
None and the engine uses SQLAlchemy's own adapter: slower, but never this module's guesses
about internals it was not written for.
"""

from __future__ import annotations

import asyncio
import collections
import re
import sqlite3
from typing import Any

import sqlalchemy
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

_Done = tuple[Any, list[Any], int, int | None]  # description, rows, rowcount, lastrowid
# Rows a read fetches in the loop's thread before it hands the rest to the database thread.
INLINE_ROWS = 200
# Statements each connection keeps prepared (Python's sqlite3 caches 128 by default). The
# dashboard runs about 100 distinct ones, and each of the pool's connections came to keep
# most of them: SQLite's heap grew 3.5 -> 6.8 MiB over three minutes at 1,000 idle agents
# and still rose; with 32 it reached 6.1 MiB all the same, with 16 it stayed at 3.2-3.7.
# Replaying such a run's statements through a cache per connection, 16 prepared as many
# as 128 while the agents connected and one more about every four seconds after (32 none
# more). What one connection runs again and again fits (docs/benchmarks.md,
# seventh pass).
CACHED_STATEMENTS = 16
WRITTEN_FOR = "2.1."  # the SQLAlchemy releases whose adapter classes these subclass


def fits(version: str = sqlalchemy.__version__) -> bool:
    """Return whether the installed SQLAlchemy is one this adapter was written for."""
    return version.startswith(WRITTEN_FOR)


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool = False) -> _Done:
    """Execute one statement in the database thread and return all it produced."""
    cur = conn.cursor()
    try:
        if many:
            cur.executemany(operation, parameters)
        else:
            cur.execute(operation, () if parameters is None else parameters)
        rows = cur.fetchall() if cur.description else []
        return cur.description, rows, cur.rowcount, cur.lastrowid
    finally:
        cur.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose statement runs in the loop's thread, or in one trip to the
    database thread when it must wait for the write lock or may run long."""

    __slots__ = ("_done",)

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No aiosqlite cursor (opening one is a trip of its own): each statement opens
        # and closes a sqlite3 cursor.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._done: _Done = (None, [], -1, None)

    @property
    def description(self) -> Any:
        return self._done[0]

    @property
    def rowcount(self) -> int:
        return self._done[2]

    @property
    def lastrowid(self) -> Any:
        return self._done[3]

    async def _async_soft_close(self) -> None:
        return  # the rows are already here and the sqlite3 cursor is closed

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._trip(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._trip(operation, seq_of_parameters, True)

    async def _trip(self, operation: str, parameters: Any, many: bool) -> None:
        adapt = self._adapt_connection
        assert isinstance(adapt, OneTripConnection)
        wanted = _busy_pragma(operation)
        if wanted is not None:
            adapt.wait_ms = wanted
            self._done = (None, [], -1, None)
            return
        if _writes(operation):
            await adapt.take_turn()
        try:
            async with adapt._execute_mutex:
                self._done = await self._run_it(adapt.wait_ms, operation, parameters, many)
        finally:
            if not adapt.in_transaction():
                adapt.end_turn()  # the statement stood alone, or failed and took its with it
        self._rows = collections.deque(self._done[1])

    async def _run_it(self, wait_ms: int, operation: str, parameters: Any, many: bool) -> _Done:
        if not _here_first(operation, parameters, many):
            return await self._there(wait_ms, operation, parameters, many)
        try:
            return await self._here(operation, parameters, many)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        # Nothing was done (another process holds the lock): wait for it in the thread.
        return await self._there(wait_ms, operation, parameters, many)

    async def _there(self, wait_ms: int, operation: str, parameters: Any, many: bool) -> _Done:
        """Run a statement in the database thread (one trip), waiting for a lock as asked."""
        aio = self._connection
        # aiosqlite's own way to run a function in its thread (its `_conn` raises
        # ValueError once closed, which the adapter turns into OperationalError).
        done: _Done = await aio._execute(
            lambda: _waiting(aio._conn, wait_ms, operation, parameters, many)
        )
        return done

    async def _here(self, operation: str, parameters: Any, many: bool) -> _Done:
        """Run a statement in the loop's thread; its rows past INLINE_ROWS are fetched in
        the database thread (the cursor is handed over between calls, never shared)."""
        aio = self._connection
        cur = aio._conn.cursor()
        try:
            if many:
                cur.executemany(operation, parameters)
            else:
                cur.execute(operation, () if parameters is None else parameters)
            rows = cur.fetchmany(INLINE_ROWS) if cur.description else []
            if len(rows) == INLINE_ROWS:
                rows += await aio._execute(cur.fetchall)
            return cur.description, rows, cur.rowcount, cur.lastrowid
        finally:
            cur.close()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    # How long a statement may wait for a lock (`PRAGMA busy_timeout`, which the
    # connection itself is never left at: see `_busy_pragma`).
    # wait_ms: how long a statement may wait for a lock (`PRAGMA busy_timeout`, which the
    # connection itself is never left at: see `_busy_pragma`); writing: it holds the
    # process's writer turn (`Writers`) until its transaction ends.
    __slots__ = ("wait_ms", "writing")
    wait_ms: int
    writing: bool

    _cursor_cls = OneTripCursor  # type: ignore[assignment]  # a subclass of it

    def _idle(self) -> bool:
        return not self.in_transaction()

    def in_transaction(self) -> bool:
        raw = self._connection._connection
        return raw is not None and raw.in_transaction

    async def take_turn(self) -> None:
        if not self.writing:
            await _writers(self.dbapi).take(self.wait_ms)
            self.writing = True

    def end_turn(self) -> None:
        if self.writing:
            self.writing = False
            _writers(self.dbapi).give_back()

    def rollback(self) -> None:
        try:
            if not self._idle():
                super().rollback()
        finally:
            self.end_turn()

    def commit(self) -> None:
        # In the database thread, as before: a commit may run a WAL checkpoint, whose
        # fsync must not hold the loop. In WAL mode it takes no lock it could wait for;
        # outside it (a database that is not WAL) it may, so it waits as asked.
        try:
            if self._idle():
                return
            raw = self._connection._conn
            _set_wait(raw, self.wait_ms)
            try:
                super().commit()
            finally:
                _set_wait(raw, 0)
        finally:
            self.end_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.end_turn()

    def terminate(self) -> None:
        try:
            super().terminate()
        finally:
            self.end_turn()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module to hand asyncengine.create_engine(module=…) for SQLite (one per engine:
    its connections share one `Writers`)."""

    def __init__(self, aiosqlite: Any, sqlite: Any) -> None:
        super().__init__(aiosqlite, sqlite)
        self.writers = Writers()

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        # The connection never waits in the loop's thread; the timeout asked for (sqlite3's
        # `timeout`, later `PRAGMA busy_timeout`) is what a trip to the thread waits.
        wait_s = float(kw.pop("timeout", 5.0))
        kw.setdefault("cached_statements", CACHED_STATEMENTS)
        adapted = super().connect(*arg, timeout=0, **kw)
        conn = OneTripConnection(self, adapted._connection)
        conn.wait_ms, conn.writing = int(wait_s * 1000), False
        return conn


class Writers:
    """This process's writers of one database, one transaction at a time, first come first
    served.

    SQLite has one writer. Two of this process's write transactions that overlap (the
    second starts while the first waits for its commit, a trip to the thread) made the
    second fail at once in the loop's thread and wait in SQLite's busy handler, which
    sleeps and polls (1, 2, 5, 10 … 100 ms): a commit long done could keep a command
    waiting tens of milliseconds. Here the second waits its turn and is woken the moment
    the first ends. The wait is bounded like SQLite's (`wait_ms`, then "database is
    locked"), so a transaction that waits for another of its own task fails as it did.
    Other processes still meet at SQLite's lock.
    """

    __slots__ = ("_lock", "_loop")

    def __init__(self) -> None:
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _current(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:  # a lock serves one loop
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    async def take(self, wait_ms: int) -> None:
        lock = self._current()
        if not lock.locked():
            await lock.acquire()  # free: no wait, no timer
            return
        try:
            async with asyncio.timeout(wait_ms / 1000):
                await lock.acquire()
        except TimeoutError:
            raise sqlite3.OperationalError("database is locked") from None

    def give_back(self) -> None:
        if self._lock is not None and self._lock.locked():
            self._lock.release()


def _writers(dbapi: Any) -> Writers:
    writers: Writers = dbapi.writers
    return writers


def _writes(operation: str) -> bool:
    """Return whether a statement may write (take SQLite's write lock): the dashboard's
    reads all start with SELECT; PRAGMAs (at connect) take no write lock."""
    head = operation.lstrip()[:6].upper()
    return head != "SELECT" and not head.startswith("PRAGMA")


def dbapi() -> OneTripDBAPI | None:
    """Return the DBAPI module for asyncengine.create_engine(module=…), or None where it does not
    fit the installed SQLAlchemy (its own adapter is the one to use then)."""
    if not fits():
        return None
    import aiosqlite

    return OneTripDBAPI(aiosqlite, sqlite3)


_BUSY_PRAGMA = re.compile(r"\s*PRAGMA\s+busy_timeout\s*=\s*(\d+)\s*;?\s*$", re.IGNORECASE)


def _busy_pragma(operation: str) -> int | None:
    """Return the milliseconds a `PRAGMA busy_timeout=N` asks for, or None for any other
    statement. It is kept as the wait of the thread's trips rather than run: in the
    loop's thread the connection must not wait at all (`db._sqlite_pragmas` sets it)."""
    found = _BUSY_PRAGMA.match(operation)
    return int(found.group(1)) if found else None


def _here_first(operation: str, parameters: Any, many: bool) -> bool:
    """Return whether a statement is tried in the loop's thread first.

    A DELETE is not: its size has no bound the caller sees (a host's removal cascades to
    all its commands' output; retention prunes), and SQLite lets go of the GIL while it
    works, so in the thread the loop goes on meanwhile. Nor is a batch of more than
    INLINE_ROWS (a heartbeat group of thousands of hosts, a full output batch).
    """
    if operation.lstrip()[:6].upper() == "DELETE":
        return False
    return not many or len(parameters) <= INLINE_ROWS


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


def _set_wait(conn: sqlite3.Connection, ms: int) -> None:
    cur = conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={int(ms)}")
    finally:
        cur.close()


def _waiting(
    conn: sqlite3.Connection, wait_ms: int, operation: str, parameters: Any, many: bool
) -> _Done:
    """Run one statement in the database thread, waiting up to wait_ms for a lock."""
    _set_wait(conn, wait_ms)
    try:
        return _run(conn, operation, parameters, many)
    finally:
        _set_wait(conn, 0)
