"""Copying a whole NixFleet database to another one: how an installation outgrows SQLite.

1. Both databases are migrated to the newest schema, so every table has the same columns.
2. The target must hold no rows: a copy merges nothing.
3. The source is read inside one transaction (one consistent snapshot, even if a
   dashboard still writes), table by table in foreign-key order, in primary-key pages.
4. Everything is written in one target transaction: a failure leaves the target empty.
5. Identity sequences (security event ids) are moved past the copied rows on PostgreSQL.
6. The row counts are compared before the commit.
7. The change counters are not copied: the target's triggers count what is copied into it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, func, select, tuple_
from sqlalchemy.exc import DBAPIError

from nixfleet.storage.asyncengine import AsyncConnection
from nixfleet.storage.changes import NOT_COPIED
from nixfleet.storage.db import Database
from nixfleet.storage.tables import metadata

PAGE = 2000
TABLES = [t for t in metadata.sorted_tables if t.name not in NOT_COPIED]


class TransferError(Exception):
    """The copy cannot be made; the message says why in words, and the target is unchanged."""


async def copy_all(
    source: Database, target: Database, progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Return {table: rows copied}, after copying every table from source to target."""
    counts: dict[str, int] = {}
    async with source.engine.connect() as src, target.engine.begin() as dst:
        await _snapshot(source, src)
        await _refuse_non_empty(dst)
        for table in TABLES:
            counts[table.name] = await _copy_table(src, dst, table)
            if progress:
                progress(table.name, counts[table.name])
        await _check_counts(dst, counts)
        if not target.is_sqlite:
            await _advance_sequences(dst)
    return counts


async def _snapshot(source: Database, src: AsyncConnection) -> None:
    """Make every read on src see the database as it was at the first one."""
    if source.is_sqlite:
        # The sqlite3 module begins transactions only before writes; without this BEGIN
        # each page would be read in a snapshot of its own.
        await src.exec_driver_sql("BEGIN")
    else:
        await src.execution_options(isolation_level="REPEATABLE READ")


async def _refuse_non_empty(dst: AsyncConnection) -> None:
    for table in TABLES:
        if (await dst.execute(select(func.count()).select_from(table))).scalar_one():
            raise TransferError(
                f"the target database already holds data (table {table.name}); "
                "copy into a new, empty database"
            )


async def _copy_table(src: AsyncConnection, dst: AsyncConnection, table: Table) -> int:
    """Return how many rows of table were copied, a page at a time in key order."""
    key = list(table.primary_key.columns)
    after: tuple[Any, ...] | None = None
    copied = 0
    while True:
        query = select(table).order_by(*key).limit(PAGE)
        if after is not None:
            query = query.where(tuple_(*key) > tuple_(*after))
        rows = [dict(r._mapping) for r in await src.execute(query)]
        if not rows:
            return copied
        try:
            await dst.execute(table.insert(), rows)
        except DBAPIError as exc:
            raise TransferError(_why(table, exc)) from None
        copied += len(rows)
        after = tuple(rows[-1][c.name] for c in key)


def _why(table: Table, exc: DBAPIError) -> str:
    reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
    return f"a row of table {table.name} cannot be stored in the target: {reason}"


async def _check_counts(dst: AsyncConnection, counts: dict[str, int]) -> None:
    for table in TABLES:
        stored = (await dst.execute(select(func.count()).select_from(table))).scalar_one()
        if stored != counts[table.name]:
            raise TransferError(
                f"table {table.name}: {counts[table.name]} rows read but {stored} stored"
            )


async def _advance_sequences(dst: AsyncConnection) -> None:
    # Rows were inserted with their ids; the next id the sequence hands out must follow them.
    for table in TABLES:
        for column in table.primary_key.columns:
            if column.autoincrement is True:
                highest = select(func.max(column)).scalar_subquery()
                sequence = func.pg_get_serial_sequence(table.name, column.name)
                await dst.execute(
                    select(func.setval(sequence, func.coalesce(highest, 0) + 1, False))
                )
