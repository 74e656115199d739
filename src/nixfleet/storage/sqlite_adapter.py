"""SQLite through aiosqlite with one trip to the database thread per statement.

aiosqlite runs each SQLite call in a thread of its own; every call is a trip there and back
(a future, a queue, a wake-up of the event loop). SQLAlchemy's aiosqlite adapter makes five
for one read: open a cursor, execute, fetch, close the cursor, and the rollback with which
the pool takes the connection back. At 1,000 agents those trips were most of the
dashboard's CPU per command (py-spy, docs/benchmarks.md "Lighter").

Here a statement's cursor, execution, rows and close are one function run in the thread
(one trip), and a commit or rollback with no transaction open is not sent at all: Python's
sqlite3 does nothing for either then (it checks the same flag, `in_transaction`, which is
safe to read from this thread while no call of this connection is under way, and none is:
SQLAlchemy awaits each one). Everything else is SQLAlchemy's own aiosqlite adapter.

A read (SELECT) runs in the event loop's own thread, no trip at all: handing a statement
to the thread and its result back (a queue put that wakes the thread, the GIL passed over
and back, the loop woken through its self-pipe) cost more CPU than SQLite's work for a
one-row read (a prebuilt host read: 290 us of CPU and 520 us of wall time through the
thread, 186 us and 260 us here; py-spy put a fifth of the dashboard's GIL samples during
dispatch on the hand-off). It is safe to do so because in WAL mode (`db._sqlite_pragmas`)
a reader takes no lock a writer holds, so it never waits out `busy_timeout`, and the
connection is opened with check_same_thread off (sqlite3's connections are serialized).
A read that returns many rows fetches only its first `INLINE_ROWS` here and the rest in
the thread, so a large listing does not hold the loop for long.

It subclasses SQLAlchemy's private adapter classes as they are in its 2.1 releases (on 2.0
it does not take effect: four trips per read). On any other minor release `dbapi()` returns
None and the engine uses SQLAlchemy's own adapter: slower, but never this module's guesses
about internals it was not written for.
"""

from __future__ import annotations

import collections
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
    """A cursor whose statement makes one trip: its rows are fetched in that trip."""

    __slots__ = ("_done",)

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No aiosqlite cursor (opening one is a trip of its own): each statement opens
        # and closes a sqlite3 cursor in the database thread.
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
        aio = self._connection
        if not many and operation.startswith("SELECT"):
            await self._read_here(operation, parameters)
            return
        async with self._adapt_connection._execute_mutex:
            # aiosqlite's own way to run a function in its thread (its `_conn` raises
            # ValueError once closed, which the adapter turns into OperationalError).
            self._done = await aio._execute(lambda: _run(aio._conn, operation, parameters, many))
        self._rows = collections.deque(self._done[1])

    async def _read_here(self, operation: str, parameters: Any) -> None:
        """Run a read in the loop's thread; its rows past INLINE_ROWS are fetched in the
        database thread (the cursor is handed over between calls, never shared)."""
        aio = self._connection
        async with self._adapt_connection._execute_mutex:
            cur = aio._conn.cursor()
            try:
                cur.execute(operation, () if parameters is None else parameters)
                rows = cur.fetchmany(INLINE_ROWS) if cur.description else []
                if len(rows) == INLINE_ROWS:
                    rows += await aio._execute(cur.fetchall)
                self._done = (cur.description, rows, cur.rowcount, cur.lastrowid)
            finally:
                cur.close()
        self._rows = collections.deque(self._done[1])


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    _cursor_cls = OneTripCursor  # type: ignore[assignment]  # a subclass of it

    def _idle(self) -> bool:
        raw = self._connection._connection
        return raw is None or not raw.in_transaction

    def rollback(self) -> None:
        if not self._idle():
            super().rollback()

    def commit(self) -> None:
        if not self._idle():
            super().commit()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module to hand create_async_engine(module=…) for SQLite."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def dbapi() -> OneTripDBAPI | None:
    """Return the DBAPI module for create_async_engine(module=…), or None where it does not
    fit the installed SQLAlchemy (its own adapter is the one to use then)."""
    if not fits():
        return None
    import aiosqlite

    return OneTripDBAPI(aiosqlite, sqlite3)
