"""Change counters: one number per kind of change, bumped in the transaction that makes it.

A dashboard process that must notice changes made elsewhere (the CLI, another replica) reads
the counter, one small row, and does the expensive check only when the number moved:
the live-credential check over every connected agent, the scan for hosts added or removed.
The tables start empty (a missing row reads 0), so `db copy` still finds a fresh target empty.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from nixfleet.storage.db import Database
from nixfleet.storage.tables import change_counters

CREDENTIALS = "credentials"  # a token rotated, revoked, enrolled or claimed; a host removed
HOSTS = "hosts"  # a host added or removed


async def bump(db: Database, conn: AsyncConnection, name: str) -> None:
    """Count one change of kind name, inside conn's transaction (it commits with it)."""
    upsert = db.upsert(change_counters).values(name=name, value=1)
    await conn.execute(
        upsert.on_conflict_do_update(
            index_elements=[change_counters.c.name],
            set_={"value": change_counters.c.value + 1},
        )
    )


async def read(db: Database, name: str) -> int:
    """Return how many changes of kind name were counted so far (0 before the first)."""
    async with db.engine.connect() as conn:
        value = (
            await conn.execute(
                select(change_counters.c.value).where(change_counters.c.name == name)
            )
        ).scalar_one_or_none()
    return int(value or 0)
