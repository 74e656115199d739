"""The PostgreSQL event bus: what one replica publishes reaches the others once, in order,
with notifications of a few bytes, and a replica cut off from PostgreSQL catches up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from conftest import wait_for_async
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade
from nixfleet.storage.pgbus import CHANNEL, PgBus


@pytest.fixture
async def pg_url(pg_cluster) -> AsyncIterator[str]:
    name = pg_cluster.create_database()
    url = pg_cluster.url(name)
    await asyncio.to_thread(upgrade, url)
    yield url
    pg_cluster.drop_database(name)


@pytest.fixture
async def replicas(pg_url) -> AsyncIterator[tuple[PgBus, PgBus]]:
    dbs = [Database(pg_url), Database(pg_url)]
    buses = [PgBus(dbs[0], "replica-a"), PgBus(dbs[1], "replica-b")]
    for bus in buses:
        await bus.start()
    yield buses[0], buses[1]
    for bus, db in zip(buses, dbs, strict=True):
        await bus.close()
        await db.close()


def _collect(bus: PgBus) -> list[dict]:
    got: list[dict] = []
    bus.subscribe(got.append)
    return got


async def test_an_event_published_on_one_replica_reaches_the_other_once(replicas):
    a, b = replicas
    on_a, on_b = _collect(a), _collect(b)
    await a.publish({"type": "session_ended", "id_hash": "x1"})
    await wait_for_async(lambda: on_b, what="the event on replica b")
    await asyncio.sleep(0.3)
    assert on_b == [{"type": "session_ended", "id_hash": "x1"}]
    assert on_a == [{"type": "session_ended", "id_hash": "x1"}]  # its own, once, at once


async def test_many_concurrent_events_arrive_in_order_and_none_twice(replicas):
    a, b = replicas
    on_b = _collect(b)
    await asyncio.gather(*(a.publish({"type": "n", "i": i}) for i in range(3000)))
    await wait_for_async(lambda: len(on_b) >= 3000, what="3000 events on replica b")
    await asyncio.sleep(0.3)
    assert [e["i"] for e in on_b] == list(range(3000))


async def test_notifications_carry_ids_not_events_however_big_the_event(replicas, pg_url):
    a, b = replicas
    on_b = _collect(b)
    conninfo = pg_url.replace("postgresql+psycopg", "postgresql")
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as spy:
        await spy.execute(f"LISTEN {CHANNEL}")
        big = {"type": "security", "alert": {"text": "x" * 100_000}}
        await asyncio.gather(
            a.publish(big), *(a.publish({"type": "n", "i": i}) for i in range(500))
        )
        payloads = []
        async for note in spy.notifies(timeout=2):
            payloads.append(note.payload)
    assert payloads and all(len(p.encode()) < 8000 for p in payloads)
    assert all(len(p) < 100 for p in payloads)
    await wait_for_async(lambda: len(on_b) == 501, what="all events on b")
    assert on_b[0] == big


async def test_local_events_stay_in_their_replica(replicas):
    a, b = replicas
    on_b = _collect(b)
    await a.publish({"type": "target", "commit": "abc", "scope": "local"})
    await a.publish({"type": "n", "i": 1})
    await wait_for_async(lambda: on_b, what="the shared event")
    await asyncio.sleep(0.3)
    assert on_b == [{"type": "n", "i": 1}]


async def test_a_replica_whose_connection_was_cut_catches_up_from_the_journal(replicas, pg_url):
    a, b = replicas
    on_b = _collect(b)
    await a.publish({"type": "n", "i": 0})
    await wait_for_async(lambda: on_b, what="the first event")
    b_listener = "nixfleet-bus replica-b"
    conninfo = pg_url.replace("postgresql+psycopg", "postgresql")
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [b_listener],
        )
    # Published while b has no listener: only the journal holds them for b.
    for i in range(1, 200):
        await a.publish({"type": "n", "i": i})
    await wait_for_async(lambda: len(on_b) >= 200, timeout=20, what="b caught up")
    await asyncio.sleep(0.5)
    assert [e["i"] for e in on_b] == list(range(200))
    assert b.reconnects >= 1


async def test_a_postgresql_restart_loses_no_event(replicas, pg_cluster):
    a, b = replicas
    on_b = _collect(b)

    async def publish_through_restart() -> None:
        for i in range(300):
            await a.publish({"type": "n", "i": i})
            await asyncio.sleep(0.005)

    publisher = asyncio.create_task(publish_through_restart())
    await wait_for_async(lambda: len(on_b) > 20, what="events flowing")
    await asyncio.to_thread(pg_cluster.stop)
    await asyncio.sleep(1)
    await asyncio.to_thread(pg_cluster.start)
    await publisher
    await wait_for_async(lambda: len(on_b) >= 300, timeout=30, what="every event on b")
    await asyncio.sleep(0.5)
    assert [e["i"] for e in on_b] == list(range(300))
    assert a.lost == 0 and b.reconnects >= 1


class _SlowCodec:
    """Events as they are, each read taking 50 ms (a replica under load); counts reads."""

    def __init__(self) -> None:
        self.reads = 0

    def shrink(self, event: dict) -> dict:
        return event

    async def expand(self, refs):
        self.reads += 1
        await asyncio.sleep(0.05)
        return list(refs)


async def test_a_replica_slow_to_read_merges_what_piled_up_and_loses_nothing(pg_url):
    # Two replicas publish one event at a time (a notification each) faster than the third
    # reads: it reads what piled up per replica in one go, every event once, in order.
    dbs = [Database(pg_url) for _ in range(3)]
    a, c, b = PgBus(dbs[0], "replica-a"), PgBus(dbs[1], "replica-c"), PgBus(dbs[2], "replica-b")
    slow = _SlowCodec()
    try:
        for bus in (a, c):
            await bus.start()
        await b.start(slow)
        on_b = _collect(b)

        async def one_at_a_time(bus: PgBus, name: str) -> None:
            for i in range(100):
                await bus.publish({"type": "n", "from": name, "i": i})

        await asyncio.gather(one_at_a_time(a, "a"), one_at_a_time(c, "c"))
        await wait_for_async(lambda: len(on_b) >= 200, timeout=60, what="200 events on b")
        await asyncio.sleep(0.3)
        for name in ("a", "c"):
            assert [e["i"] for e in on_b if e["from"] == name] == list(range(100))
        assert len(on_b) == 200
        assert slow.reads < 100  # one read per notification would be 200
    finally:
        for bus in (a, c, b):
            await bus.close()
        for db in dbs:
            await db.close()
