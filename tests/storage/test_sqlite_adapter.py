"""SQLite with statements in the event loop's thread and commits in one trip
(storage/sqlite_adapter.py) keeps what SQLAlchemy's own aiosqlite adapter gave: rows,
counts, RETURNING, errors, transactions that either commit whole or leave nothing behind,
and writers that wait for each other, without holding up the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite.core
import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from nixfleet.storage import sqlite_adapter
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade
from nixfleet.storage.tables import sessions


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    await asyncio.to_thread(upgrade, url)
    database = Database(url)
    yield database
    await database.close()


def _row(n: int) -> dict[str, object]:
    return {"id_hash": f"h{n}", "username": "ada", "csrf": "c", "created_at": n, "last_seen": n}


async def _count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(sessions))).scalar_one()


async def test_rows_counts_and_returning_come_back_as_before(db):
    async with db.engine.begin() as conn:
        await conn.execute(insert(sessions), [_row(n) for n in range(5)])  # executemany
        back = await conn.execute(insert(sessions).values(_row(9)).returning(sessions.c.id_hash))
        assert back.scalar_one() == "h9"
        moved = await conn.execute(
            update(sessions).where(sessions.c.created_at < 3).values(last_seen=50.0)
        )
        assert moved.rowcount == 3
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(sessions).order_by(sessions.c.id_hash))).all()
    assert [(r.id_hash, r.last_seen) for r in rows] == [
        ("h0", 50.0), ("h1", 50.0), ("h2", 50.0), ("h3", 3.0), ("h4", 4.0), ("h9", 9.0)
    ]  # fmt: skip


async def test_a_transaction_that_fails_half_way_leaves_nothing_behind(db):
    with pytest.raises(IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(insert(sessions).values(_row(1)))
            await conn.execute(insert(sessions).values(_row(1)))  # the same key again
    assert await _count(db) == 0
    with pytest.raises(RuntimeError):
        async with db.engine.begin() as conn:
            await conn.execute(insert(sessions).values(_row(2)))
            raise RuntimeError("the caller gave up")
    assert await _count(db) == 0
    # The pooled connection is usable afterwards, and a good transaction commits.
    async with db.engine.begin() as conn:
        await conn.execute(insert(sessions).values(_row(3)))
    assert await _count(db) == 1


async def test_a_write_waits_for_another_writer_and_readers_see_only_what_was_committed(db):
    other = Database(db.url)  # another process's view: its own connection
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(sessions).values(_row(1)))
            assert await _count(other) == 0  # not committed yet
            writer = asyncio.create_task(_insert(other, 2))
            await asyncio.sleep(0.2)
            assert not writer.done(), "a second writer did not wait for the first"
        await writer
        assert await _count(other) == 2
    finally:
        await other.close()


async def _insert(db: Database, n: int) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(insert(sessions).values(_row(n)))


def _count_trips(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    trips: list[object] = []
    real = aiosqlite.core.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        trips.append(fn)
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    return trips


needs_fit = pytest.mark.skipif(
    not sqlite_adapter.fits(), reason="SQLAlchemy's own adapter is used on this release"
)


@needs_fit
async def test_a_read_and_a_small_write_run_without_a_trip_and_the_commit_is_one(db, monkeypatch):
    await _count(db)  # the pool's connection is open
    trips = _count_trips(monkeypatch)
    assert await _count(db) == 0
    # SQLAlchemy's own adapter made 5: cursor, execute, fetch, close, rollback.
    assert trips == []
    await _insert(db, 1)
    assert len(trips) == 1  # the commit (SQLAlchemy's adapter: 4 with it)
    async with db.engine.begin() as conn:
        await conn.execute(insert(sessions), [_row(n) for n in range(2, 12)])  # executemany
    assert len(trips) == 2


@needs_fit
async def test_a_delete_and_a_large_batch_go_to_the_thread(db, monkeypatch):
    await _count(db)
    trips = _count_trips(monkeypatch)
    count = sqlite_adapter.INLINE_ROWS + 1
    async with db.engine.begin() as conn:
        await conn.execute(insert(sessions), [_row(n) for n in range(count)])
    assert len(trips) == 2  # the batch and the commit
    async with db.engine.begin() as conn:
        gone = await conn.execute(delete(sessions).where(sessions.c.created_at < 5))
    assert gone.rowcount == 5
    assert len(trips) == 4
    assert await _count(db) == count - 5


async def test_a_reader_is_served_while_a_writer_waits_for_the_lock(db):
    other = Database(db.url)  # another process's view: its own connection
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(sessions).values(_row(1)))
            writer = asyncio.create_task(_insert(other, 2))
            # The waiting writer holds no loop: reads on both databases go on meanwhile.
            for _ in range(3):
                assert await _count(other) == 0
                await asyncio.sleep(0.05)
            assert not writer.done()
        await writer
        assert await _count(db) == 2
    finally:
        await other.close()


async def test_a_writer_gives_up_after_the_busy_timeout_it_was_given(db):
    impatient = Database(db.url, busy_timeout_s=0.2)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(sessions).values(_row(1)))
            with pytest.raises(OperationalError, match="database is locked"):
                await _insert(impatient, 2)
        await _insert(impatient, 3)  # the lock is free: it writes at once
        assert await _count(db) == 2
    finally:
        await impatient.close()


@needs_fit
async def test_writers_of_one_process_take_turns_and_none_meets_a_busy_database(db):
    async with db.engine.begin() as conn:
        await conn.execute(insert(sessions).values(_row(1)))
        second = asyncio.create_task(_insert(db, 2))  # the same process, its own connection
        await asyncio.sleep(0.05)
        assert not second.done()  # waiting for its turn
        await conn.execute(insert(sessions).values(_row(3)))  # the first goes on meanwhile
    await second
    assert await _count(db) == 3


@needs_fit
async def test_a_writer_waiting_for_a_writer_of_its_own_task_fails_as_sqlite_would(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    await asyncio.to_thread(upgrade, url)
    impatient = Database(url, busy_timeout_s=0.2)
    try:
        with pytest.raises(IntegrityError):  # unrelated: the outer one then fails itself
            async with impatient.engine.begin() as conn:
                await conn.execute(insert(sessions).values(_row(1)))
                with pytest.raises(OperationalError, match="database is locked"):
                    await _insert(impatient, 2)  # nested: waits for the outer one
                await conn.execute(insert(sessions).values(_row(1)))
        await _insert(impatient, 4)  # the turn was given back
        assert await _count(impatient) == 1
    finally:
        await impatient.close()


@needs_fit
async def test_a_read_of_many_rows_returns_every_row_in_order(db, monkeypatch):
    count = sqlite_adapter.INLINE_ROWS * 3 + 7
    async with db.engine.begin() as conn:
        await conn.execute(insert(sessions), [_row(n) for n in range(count)])
    trips = _count_trips(monkeypatch)
    async with db.engine.connect() as conn:
        rows = await conn.execute(select(sessions.c.created_at).order_by(sessions.c.created_at))
        assert [r[0] for r in rows] == list(range(count))
    assert len(trips) == 1  # the rows past the first INLINE_ROWS came from the thread


@needs_fit
async def test_a_connection_keeps_few_statements_prepared_and_each_still_answers(db):
    many = sqlite_adapter.CACHED_STATEMENTS * 2
    async with db.engine.connect() as conn:
        try:  # SQLite's list of a connection's prepared statements (most builds have it)
            await conn.exec_driver_sql("SELECT count(*) FROM sqlite_stmt")
        except OperationalError:
            pytest.skip("this SQLite has no sqlite_stmt table")
        answers = [(await conn.execute(text(f"SELECT {n}"))).scalar_one() for n in range(many)]
        held = (await conn.exec_driver_sql("SELECT count(*) FROM sqlite_stmt")).scalar_one()
        again = (await conn.execute(text("SELECT 0"))).scalar_one()  # prepared anew
    assert answers == list(range(many)) and again == 0
    # The cache's statements, and the one counting them.
    assert held <= sqlite_adapter.CACHED_STATEMENTS + 1


def test_other_sqlalchemy_releases_get_sqlalchemy_s_own_adapter():
    # The adapter subclasses private classes of the 2.1 releases: elsewhere it stands aside.
    assert sqlite_adapter.fits("2.1.9") and not sqlite_adapter.fits("2.0.58")
    assert not sqlite_adapter.fits("2.2.0") and not sqlite_adapter.fits("2.10.1")
