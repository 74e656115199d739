"""The database handle: engine creation, SQLite pragmas, dialect-neutral upserts."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


class Database:
    """Own the engine; every storage function takes one of these and its scope."""

    def __init__(self, url: str, busy_timeout_s: float = 10.0) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=False)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            pragmas = functools.partial(_sqlite_pragmas, busy_ms=int(busy_timeout_s * 1000))
            event.listen(self.engine.sync_engine, "connect", pragmas)

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
        dialect = sqlite if self.is_sqlite else postgresql
        return dialect.insert(table).on_conflict_do_nothing()

    async def close(self) -> None:
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
