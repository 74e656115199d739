"""The database handle: engine creation, per-engine connection set-up, dialect-neutral upserts.

Two engines are supported: SQLite (aiosqlite, the default, one dashboard process) and
PostgreSQL (psycopg 3, async; several replicas on one database), each driven from the event
loop through `asyncengine` (SQLAlchemy's sync engine, without its ORM).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from nixfleet.storage import sqlite_adapter
from nixfleet.storage.asyncengine import AsyncConnection, AsyncEngine, create_engine

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def engine_url(url: str) -> str:
    """Return url with the async driver NixFleet uses for its engine.

    `postgresql://…` and `sqlite:///…` are accepted as people write them; any other scheme
    (or a driver NixFleet does not ship) is refused with a sentence naming the setting.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "NIXFLEET_DATABASE_URL is not a database URL (sqlite:///… or postgresql://…)"
        ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"NIXFLEET_DATABASE_URL: {parsed.drivername!r} is not supported; "
            "use sqlite:///… or postgresql://…"
        )
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def is_transient(exc: BaseException) -> bool:
    """Return whether exc is the weather (busy, locked, full, unreachable): worth a retry.

    A pool with no connection free within its timeout is the database being busy too.
    """
    return isinstance(exc, OperationalError | PoolTimeout | OSError | TimeoutError)


def failure_reason(exc: BaseException) -> str:
    """Return what the database said, for a log line (a pool timeout says nothing useful)."""
    if isinstance(exc, PoolTimeout):
        return "no connection came free"
    return str(getattr(exc, "orig", None) or exc)


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log a background step that failed: one line for the weather (the step runs again
    later by itself), the traceback for anything else (a bug)."""
    if is_transient(exc):
        logger.warning("%s postponed: %s", what, failure_reason(exc))
    else:
        logger.error("%s failed", what, exc_info=exc)


_SQLITE_WRITE_LOCK = text("UPDATE alembic_version SET version_num = version_num WHERE 1 = 0")
_PG_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:n))")
# Each name's lock in the order given (unnest keeps the array's order): callers sort, so
# two transactions wanting overlapping sets never hold one each and wait for the other.
_PG_ADVISORY_LOCKS = text(
    "SELECT count(pg_advisory_xact_lock(hashtext(n))) FROM unnest(CAST(:names AS text[])) AS n"
)


@dataclass(frozen=True)
class PoolSize:
    """How many PostgreSQL connections one process may hold, and how long a request waits.

    Each replica holds up to size + overflow connections; all replicas together must stay
    under the server's max_connections. A request that finds none free within timeout_s is
    answered 503 "database busy" (pipeline/errors.py) rather than queueing without end.
    """

    size: int = 10
    overflow: int = 20
    timeout_s: float = 30.0


class Database:
    """Own the engine; every storage function takes one of these and its scope."""

    def __init__(
        self, url: str, busy_timeout_s: float = 10.0, pool: PoolSize | None = None
    ) -> None:
        self.url = engine_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            # Statements run in the loop's thread, and only what must wait or may run long
            # goes to aiosqlite's (sqlite_adapter.py); hence check_same_thread off.
            module = sqlite_adapter.dbapi()
            self.engine: AsyncEngine = create_engine(
                self.url,
                connect_args={"check_same_thread": False},
                **({"module": module} if module else {}),
            )
            pragmas = functools.partial(_sqlite_pragmas, busy_ms=int(busy_timeout_s * 1000))
            event.listen(self.engine.sync_engine, "connect", pragmas)
        else:
            size = pool or PoolSize()
            # LIFO: the connection used last is drawn first, so under load the same few
            # stay busy (and are not pinged, below) while the rest idle.
            self.engine = create_engine(
                self.url,
                pool_size=size.size,
                max_overflow=size.overflow,
                pool_timeout=size.timeout_s,
                pool_use_lifo=True,
            )
            event.listen(self.engine.sync_engine, "connect", _postgres_session)
            engine_pool = self.engine.sync_engine.pool
            event.listen(engine_pool, "checkin", _note_checkin)
            event.listen(
                engine_pool, "checkout", functools.partial(_ping_if_idle, self.engine.dialect)
            )
        # Reads. On PostgreSQL a read outside a transaction (autocommit) spares the BEGIN
        # and the ROLLBACK, two of a one-query read's four round trips; under PostgreSQL's
        # READ COMMITTED each statement sees its own snapshot either way. The same pool.
        self.reader: AsyncEngine = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @property
    def dialect(self) -> str:
        """Return "sqlite" or "postgresql"."""
        return "sqlite" if self.is_sqlite else "postgresql"

    def free_bytes(self) -> int | None:
        """Return the space left where the SQLite file lives (None for other databases)."""
        path = self.engine.url.database if self.is_sqlite else None
        if not path or path == ":memory:":
            return None
        try:
            st = os.statvfs(Path(path).parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def insert_ignore(self, table: Table) -> Any:
        """Return an INSERT that skips rows whose primary key exists (idempotent replays)."""
        if self.is_sqlite:
            return sqlite.insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects import postgresql  # 19 modules SQLite never needs

        return postgresql.insert(table).on_conflict_do_nothing()

    @contextlib.asynccontextmanager
    async def unframed(self) -> AsyncIterator[AsyncConnection]:
        """Yield a connection on which each statement commits by itself.

        For work whose every statement stands alone (one guarded UPDATE, a read then a
        write that guards itself): on PostgreSQL autocommit, which spares BEGIN and
        COMMIT, two of a one-statement write's four round trips. SQLite runs in-process,
        so there it is one ordinary transaction.
        """
        if self.is_sqlite:
            async with self.engine.begin() as conn:
                yield conn
        else:
            async with self.reader.connect() as conn:
                yield conn

    async def write_lock(self, conn: AsyncConnection, name: str) -> None:
        """Hold a lock named name until conn's transaction ends, across processes.

        For read-then-write steps that must not interleave between replicas (the audit
        chain's head). PostgreSQL: an advisory transaction lock. SQLite: a no-op write,
        which takes the database's one write lock now, before the read, and waits
        (busy_timeout) rather than failing later on a stale snapshot.
        """
        if self.is_sqlite:
            await conn.execute(_SQLITE_WRITE_LOCK)
        else:
            await conn.execute(_PG_ADVISORY_LOCK, {"n": name})

    async def write_locks(self, conn: AsyncConnection, names: Iterable[str]) -> None:
        """Hold a lock for each of names until conn's transaction ends, across processes.

        For read-then-write steps that must not interleave for the same key (a host) but may
        run side by side for different ones: on PostgreSQL, one advisory lock per name,
        taken in sorted order in one round trip. SQLite has one writer anyway: write_lock.
        """
        if self.is_sqlite:
            await conn.execute(_SQLITE_WRITE_LOCK)
        else:
            await conn.execute(_PG_ADVISORY_LOCKS, {"names": sorted(set(names))})

    @functools.cached_property
    def lease(self) -> AsyncEngine:
        """Return the engine a replica's lease is renewed through: a pool of its own.

        On PostgreSQL the lease must be renewed on time whatever the rest of the process is
        doing: thousands of agents connecting at once can keep every connection of the
        main pool busy, and a renewal waiting behind them had the other replica take this
        one for dead. One connection is enough (one statement every few seconds).
        SQLite has one process and no lease that matters: the same engine.
        """
        if self.is_sqlite:
            return self.engine
        engine = create_engine(self.url, pool_size=1, max_overflow=0, pool_pre_ping=True)
        event.listen(engine.sync_engine, "connect", _postgres_session)
        return engine

    async def close(self) -> None:
        if "lease" in self.__dict__ and self.lease is not self.engine:
            await self.lease.dispose()
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, busy_ms: int = 10_000) -> None:
    # WAL lets browsers read while agents write; busy_timeout turns "database is locked"
    # into a short wait; foreign keys are off by default in SQLite.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={busy_ms}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class _NulSafe:
    """Dump a str with each NUL replaced by U+FFFD.

    PostgreSQL's text types cannot hold NUL (SQLite's can); an agent's output line or
    detail carrying one must not make its INSERT fail, and be resent forever.
    """

    def dump(self, obj: str) -> Any:
        return super().dump(obj.replace("\x00", "\ufffd"))  # type: ignore[misc]


@functools.cache
def _str_dumpers() -> list[type]:
    """Return NUL-safe versions of psycopg's str dumpers (psycopg loaded only for PostgreSQL).

    psycopg picks the last dumper registered for a format, and by oid for typed parameters;
    registering NUL-safe versions of all of them in psycopg's own order keeps both lookups.
    """
    from psycopg.types import string as pg_string

    return [
        type(f"NulSafe{base.__name__}", (_NulSafe, base), {})
        for base in (
            pg_string.StrBinaryDumperName,
            pg_string.StrBinaryDumperVarchar,
            pg_string.StrBinaryDumper,
            pg_string.StrDumperName,
            pg_string.StrDumperVarchar,
            pg_string.StrDumper,
            pg_string.StrDumperUnknown,
        )
    ]


# A pooled connection idle longer than this is pinged before use. A replica outlives a
# PostgreSQL restart: a connection from before it is replaced on checkout instead of
# failing the request that drew it. SQLAlchemy's pool_pre_ping pings at every checkout,
# which was a third of the statements a command made on PostgreSQL (bench.statements);
# a connection used within the last second has not outlived a restart (which takes
# longer), and one that met the restart while in use was invalidated with its pool then.
PING_IDLE_S = 1.0


def _note_checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dialect: Any, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """Ping a connection idle past PING_IDLE_S; a dead one makes the pool draw another
    (raising DisconnectionError on checkout is SQLAlchemy's documented way to ask it)."""
    since = record.info.get("checked_in_at")
    if since is None or time.monotonic() - since <= PING_IDLE_S:
        return
    try:
        dialect.do_ping(dbapi_conn)
    except dialect.loaded_dbapi.Error as exc:
        if not dialect.is_disconnect(exc, dbapi_conn, None):
            raise
        raise DisconnectionError("the pooled connection to PostgreSQL was closed") from exc


def _postgres_session(dbapi_conn: Any, _record: Any) -> None:
    for dumper in _str_dumpers():
        dbapi_conn.adapters.register_dumper(str, dumper)
