"""A dashboard outlives a PostgreSQL restart: the pooled connections from before it are
found dead on their next checkout and replaced, so no request fails for them."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from nixfleet.storage import db as db_module
from nixfleet.storage import hosts as host_store
from nixfleet.storage.db import Database
from nixfleet.storage.tables import hosts


async def _read_together(db: Database, n: int) -> None:
    """Hold n pooled connections at once, so the pool keeps n of them."""

    async def one() -> None:
        async with db.reader.connect() as conn:
            await conn.execute(select(hosts.c.id))
            await asyncio.sleep(0.05)

    await asyncio.gather(*(one() for _ in range(n)))


async def test_every_pooled_connection_from_before_a_restart_is_replaced_unseen(pg_db, pg_cluster):
    await host_store.add(pg_db, "web-1", None, 1.0, {})
    await _read_together(pg_db, 4)
    await asyncio.to_thread(pg_cluster.stop)
    await asyncio.to_thread(pg_cluster.start)
    await asyncio.sleep(db_module.PING_IDLE_S + 0.2)
    # Each of the four reads draws a connection that died with the old server.
    for _ in range(4):
        assert (await host_store.get(pg_db, "web-1"))["id"] == "web-1"
    await _read_together(pg_db, 4)
