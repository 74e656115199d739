"""The dashboard's async engine (storage/asyncengine.py) ends every transaction and returns
every connection, however a request ends: a statement that fails rolls its transaction
back, a cancelled request (the client went away, a timeout) leaves nothing checked out and,
on SQLite, gives this process's writer turn back, so the next write goes through at once.
Errors keep SQLAlchemy's types, which the 503 answers and the retries read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from conftest import Backend
from nixfleet.storage.db import Database, PoolSize, is_transient
from nixfleet.storage.migrate import upgrade
from nixfleet.storage.tables import sessions

# Short waits, so a leak shows as an error rather than as a slow test: on SQLite the
# writer turn (busy timeout), on PostgreSQL the one pooled connection (pool timeout).
WAIT_S = 0.5


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, backend.url)
    database = Database(
        backend.url, busy_timeout_s=WAIT_S, pool=PoolSize(size=1, overflow=0, timeout_s=WAIT_S)
    )
    yield database
    await database.close()


def _row(n: int) -> dict[str, object]:
    return {"id_hash": f"h{n}", "username": "ada", "csrf": "c", "created_at": n, "last_seen": n}


async def _insert(db: Database, n: int) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(insert(sessions).values(_row(n)))


async def _stored(db: Database) -> list[str]:
    async with db.reader.connect() as conn:
        found = await conn.execute(select(sessions.c.id_hash).order_by(sessions.c.id_hash))
        return list(found.scalars())


def _count_connects(db: Database) -> list[object]:
    opened: list[object] = []
    event.listen(db.engine.sync_engine, "connect", lambda conn, _record: opened.append(conn))
    return opened


def _checked_out(db: Database) -> int:
    return int(db.engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_a_failing_statement_rolls_back_and_the_next_write_goes_through(db):
    with pytest.raises(IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(insert(sessions).values(_row(1)))
            await conn.execute(insert(sessions).values(_row(1)))  # the same key again
    await _insert(db, 2)  # within WAIT_S: nothing was left holding the turn or the pool
    assert await _stored(db) == ["h2"]
    assert _checked_out(db) == 0


async def test_a_connection_left_without_a_commit_is_rolled_back_and_returned(db):
    async with db.engine.connect() as conn:
        await conn.execute(insert(sessions).values(_row(1)))
        await conn.commit()
    with pytest.raises(IntegrityError):
        async with db.engine.connect() as conn:
            await conn.execute(insert(sessions).values(_row(3)))
            await conn.execute(insert(sessions).values(_row(1)))
            await conn.commit()
    async with db.engine.connect() as conn:
        await conn.execute(insert(sessions).values(_row(4)))  # never committed: rolled back
    await _insert(db, 5)
    assert await _stored(db) == ["h1", "h5"]
    assert _checked_out(db) == 0


async def test_a_request_cancelled_inside_its_transaction_leaves_nothing_behind(db):
    await _insert(db, 0)  # the pooled connection is open
    opened = _count_connects(db)
    inside = asyncio.Event()

    async def request() -> None:
        async with db.engine.begin() as conn:
            await conn.execute(insert(sessions).values(_row(1)))
            inside.set()
            await asyncio.sleep(30)  # the client goes away here

    task = asyncio.create_task(request())
    await inside.wait()
    task.cancel()
    # anyio's cancel scopes cancel again at every await: the rollback must still finish.
    for _ in range(5):
        await asyncio.sleep(0)
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _checked_out(db) == 0
    await _insert(db, 2)
    assert await _stored(db) == ["h0", "h2"]
    # The rollback ran to its end: the connection was kept, not closed as unusable.
    assert opened == []


async def test_a_request_cancelled_mid_statement_leaves_nothing_behind(db, backend):
    holder = Database(backend.url)  # another process, which holds what the statement waits for
    try:
        async with holder.engine.begin() as held:
            await held.execute(insert(sessions).values(_row(1)))
            # On SQLite the write waits for the other process's lock in aiosqlite's thread;
            # on PostgreSQL for the row lock of the same key, on the server.
            task = asyncio.create_task(_insert(db, 1))
            await asyncio.sleep(0.1)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # The holder committed: the cancelled write, had it gone on, would fail now.
        await _insert(db, 2)
        assert await _stored(db) == ["h1", "h2"]
        assert _checked_out(db) == 0
    finally:
        await holder.close()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_no_connection_free_within_the_pool_timeout_is_the_pools_timeout_error(db):
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeout) as waited:
            await _insert(db, 1)
    assert is_transient(waited.value)  # answered 503 "database busy", retried in background
    await _insert(db, 1)
    assert await _stored(db) == ["h1"]


async def test_results_are_read_after_the_statement_returns(db):
    async with db.engine.begin() as conn:
        await conn.execute(insert(sessions), [_row(n) for n in range(3)])
        many = await conn.execute(select(sessions.c.id_hash).order_by(sessions.c.id_hash))
        count = await conn.execute(select(func.count()).select_from(sessions))
        raw = await conn.exec_driver_sql("SELECT count(*) FROM sessions")
    # The connection is back in its pool; the rows came with the statements.
    assert many.scalars().all() == ["h0", "h1", "h2"]
    assert count.scalar_one() == 3 and raw.scalar_one() == 3
    assert _checked_out(db) == 0
