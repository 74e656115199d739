"""NixFleet's async engine: SQLAlchemy's sync Engine, driven from the event loop.

Why not `sqlalchemy.ext.asyncio`: its package `__init__` imports its ORM session, which
imports all of `sqlalchemy.orm` (50 modules, 6 MiB of the dashboard's resident floor and
70–90 ms of CPU at every start: docs/benchmarks.md, branch `core-28`) for a dashboard that
writes Core statements only. What NixFleet
uses of it is small, so it is here, in about the same shape: `engine.begin()`,
`engine.connect()`, `conn.execute()`, `exec_driver_sql()`, `execution_options()`,
`commit()`, `rollback()`, `run_sync()`, `engine.dispose()`.

How it works. The engine is SQLAlchemy's ordinary sync Engine made with `_is_async=True`,
so its dialect is the async one (aiosqlite through `sqlite_adapter`, psycopg's async
connection) and its pool an asyncio one. Such a driver does its I/O by handing a coroutine
to `await_()`, which only works inside a greenlet started by SQLAlchemy's `greenlet_spawn`:
each call below runs the sync method in one, and `greenlet_spawn` awaits every coroutine
the method hands over in the caller's task. Errors are SQLAlchemy's own (OperationalError,
IntegrityError, the pool's TimeoutError), raised as the sync engine raises them.

What a caller relies on:

1. Results are complete when `execute` returns: both drivers fetch a statement's rows in
   the same trip as the statement, so `.scalar()`, `.all()`, `.mappings()` and the rest
   are plain sync calls on the returned `CursorResult`. Server-side cursors (streaming)
   are not offered.
2. A connection always goes back to its pool, its transaction ended, however the block
   ends: normally (commit after `begin()`), by an exception or a cancellation (rollback),
   or by a cancellation during the commit or rollback itself. The ending runs in a task of
   its own that the caller waits for even when it is cancelled again meanwhile (anyio's
   cancel scopes cancel at every await), and the cancellation is raised once it is done.
   A cancellation that lands mid-statement makes SQLAlchemy treat the connection as
   unusable (it cannot know what the driver had done) and close it instead of pooling it.
   On SQLite that matters twice: `sqlite_adapter.Writers` is this process's one writer
   turn, given back only when a transaction ends or its connection closes.
3. Opening and beginning are one trip through `greenlet_spawn`, and so are committing and
   returning the connection: half the switches `sqlalchemy.ext.asyncio` makes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine
from sqlalchemy.engine.url import URL
from sqlalchemy.pool import Pool
from sqlalchemy.sql.base import Executable
from sqlalchemy.util import greenlet_spawn

_P = ParamSpec("_P")
_T = TypeVar("_T")

Params = dict[str, Any] | list[dict[str, Any]] | None
# What execute returns: a result whose rows have any number of columns of any type.
Rows = CursorResult[*tuple[Any, ...]]


def create_engine(url: str | URL, **kw: Any) -> AsyncEngine:
    """Return an AsyncEngine for url (an async driver: sqlite+aiosqlite, postgresql+psycopg);
    kw are SQLAlchemy's `create_engine` arguments (pool size, connect_args, module…)."""
    return AsyncEngine(create_sync_engine(url, _is_async=True, **kw))


class AsyncEngine:
    """A sync Engine's connections, opened, used and returned from the event loop."""

    __slots__ = ("sync_engine",)

    def __init__(self, sync_engine: Engine) -> None:
        # The target for event listeners (`connect`) and the way to its pool.
        self.sync_engine = sync_engine

    @property
    def dialect(self) -> Dialect:
        return self.sync_engine.dialect

    @property
    def url(self) -> URL:
        return self.sync_engine.url

    @property
    def pool(self) -> Pool:
        return self.sync_engine.pool

    def connect(self) -> Opening:
        """Return `async with engine.connect() as conn:`: a connection that commits only
        when asked (`conn.commit()`); whatever is left open at the end is rolled back."""
        return Opening(self.sync_engine, begin=False)

    def begin(self) -> Opening:
        """Return `async with engine.begin() as conn:`: a connection in a transaction that
        commits when the block ends normally and rolls back when it raises."""
        return Opening(self.sync_engine, begin=True)

    def execution_options(self, **options: Any) -> AsyncEngine:
        """Return an engine over the same pool whose connections take options
        (`isolation_level="AUTOCOMMIT"`: each statement commits by itself)."""
        return AsyncEngine(self.sync_engine.execution_options(**options))

    async def dispose(self) -> None:
        """Close every pooled connection (connections in use close when returned)."""
        await greenlet_spawn(self.sync_engine.dispose)


class AsyncConnection:
    """One pooled connection, used from the event loop; made by AsyncEngine.connect/begin."""

    __slots__ = ("sync_connection",)

    def __init__(self, sync_connection: Connection) -> None:
        self.sync_connection = sync_connection

    @property
    def dialect(self) -> Dialect:
        return self.sync_connection.dialect

    def in_transaction(self) -> bool:
        return self.sync_connection.in_transaction()

    async def execute(self, statement: Executable, parameters: Params = None) -> Rows:
        """Return the result of statement (a list of parameter dicts: executemany)."""
        result = await greenlet_spawn(self.sync_connection.execute, statement, parameters)
        await _settled(result)
        return result

    async def exec_driver_sql(
        self, statement: str, parameters: dict[str, Any] | tuple[Any, ...] | None = None
    ) -> Rows:
        """Return the result of statement, sent to the driver as written."""
        result = await greenlet_spawn(self.sync_connection.exec_driver_sql, statement, parameters)
        await _settled(result)
        return result

    async def execution_options(self, **options: Any) -> AsyncConnection:
        """Set options on this connection (an isolation level is set on the driver's
        connection at once, hence a trip) and return it."""
        await greenlet_spawn(self.sync_connection.execution_options, **options)
        return self

    async def commit(self) -> None:
        await greenlet_spawn(self.sync_connection.commit)

    async def rollback(self) -> None:
        await greenlet_spawn(self.sync_connection.rollback)

    async def run_sync(
        self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kw: _P.kwargs
    ) -> _T:
        """Return fn(sync connection, …), run where its statements may do I/O (Alembic's
        migrations, written against a sync connection)."""
        return await greenlet_spawn(functools.partial(fn, self.sync_connection, *args, **kw))


class Opening:
    """`async with` for a pooled connection: taken on entry, its transaction ended and the
    connection returned on every way out (see the module's docstring, point 2)."""

    __slots__ = ("_begin", "_conn", "_engine")

    def __init__(self, engine: Engine, begin: bool) -> None:
        self._engine = engine
        self._begin = begin
        self._conn: Connection | None = None

    async def __aenter__(self) -> AsyncConnection:
        # A cancellation while waiting for the pool leaves nothing checked out; after the
        # greenlet returns there is no await before the block owns the connection.
        self._conn = await greenlet_spawn(_opened, self._engine, self._begin)
        return AsyncConnection(self._conn)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None, "__aexit__ without __aenter__"
        commit = self._begin and exc is None
        try:
            await _to_the_end(greenlet_spawn(_ended, conn, commit))
        except BaseException as failure:
            if exc is None or failure is exc:
                raise
            if not isinstance(exc, Exception):
                return  # a cancellation (or an exit) stays what the caller hears
            failure.__context__ = exc  # shown as "during handling of", not lost
            raise


def _opened(engine: Engine, begin: bool) -> Connection:
    """Return a connection from engine's pool, in a transaction when begin (in a greenlet)."""
    conn = engine.connect()
    if begin:
        try:
            conn.begin()
        except BaseException:
            conn.close()
            raise
    return conn


def _ended(conn: Connection, commit: bool) -> None:
    """Commit conn's transaction when asked and return conn to its pool (in a greenlet).

    close() rolls back whatever is still open (a failed commit too) and then skips the
    pool's own reset, so an abandoned transaction costs one rollback, not two.
    """
    try:
        if commit:
            conn.commit()
    finally:
        conn.close()


async def _settled(result: Rows) -> None:
    """Let the driver's cursor go while the rows stay in the result.

    SQLAlchemy closes a cursor by itself once its rows are read, but by then the caller
    is outside any greenlet, where a driver whose close is a coroutine (SQLAlchemy's
    own aiosqlite adapter, the fallback for a SQLAlchemy `sqlite_adapter` was not written
    for) cannot run it; such a cursor offers `_async_soft_close` for this moment (ours and
    psycopg's close without I/O, and it returns at once).
    """
    cursor = result.cursor  # None once SQLAlchemy has closed it (no rows)
    soft_close: Callable[[], Awaitable[None]] | None = getattr(cursor, "_async_soft_close", None)
    if soft_close is not None:
        await soft_close()


async def _to_the_end(ending: Coroutine[Any, Any, None]) -> None:
    """Run ending to its end even if the caller is cancelled meanwhile, then raise the
    cancellation (and otherwise whatever ending raised).

    Abandoned half-way, an ending would leave a connection checked out with its
    transaction open: on SQLite the process's writer turn held until the pool's garbage
    collection noticed, every later write waiting for it.
    """
    task = asyncio.ensure_future(ending)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():
                break  # the ending itself was cancelled (the loop is closing)
            cancelled = exc
    if cancelled is not None:
        if not task.cancelled() and task.exception() is not None:
            task.exception()  # retrieved: the cancellation is what the caller hears of
        raise cancelled
    task.result()
