"""A replica's lease is renewed on time however busy the rest of the process is: on
PostgreSQL it has a connection of its own, so a main pool taken up by thousands of agents'
handshakes (every connection checked out, more waiting) never holds a renewal back, and
the other replicas never take a live replica for dead."""

from __future__ import annotations

import asyncio
import contextlib

from nixfleet.storage import replicas

NOW = 1_760_000_000.0


async def test_a_lease_is_renewed_while_every_pooled_connection_is_busy(pg_db):
    await replicas.register(pg_db, "replica-a", NOW, 15)
    pool = pg_db.engine.sync_engine.pool
    held = contextlib.AsyncExitStack()
    async with held:
        # Every connection the main pool may open (pool_size + max_overflow) is in use.
        for _ in range(pool.size() + pool._max_overflow):  # type: ignore[attr-defined]
            await held.enter_async_context(pg_db.engine.connect())
        waiting = asyncio.ensure_future(pg_db.engine.connect().__aenter__())
        await asyncio.sleep(0.2)
        assert not waiting.done()  # a request would queue now
        # (A bound, not a speed claim: the main pool would make it wait 30 s.)
        assert await asyncio.wait_for(replicas.renew(pg_db, "replica-a", NOW + 5, 15), 10)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await waiting
    # The other replica, checking after the old lease would have run out, finds it alive.
    assert await replicas.release_dead(pg_db, "replica-b", NOW + 19) == []
    assert [r["id"] for r in await replicas.live(pg_db, NOW + 19)] == ["replica-a"]


async def test_a_lease_not_renewed_is_taken_for_dead(pg_db):
    await replicas.register(pg_db, "replica-a", NOW, 15)
    assert await replicas.release_dead(pg_db, "replica-b", NOW + 16) == []  # no hosts
    assert await replicas.live(pg_db, NOW + 16) == []
    assert not await replicas.renew(pg_db, "replica-a", NOW + 17, 15)  # it must register again
