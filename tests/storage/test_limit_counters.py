"""Rate counters and event-stream seats in PostgreSQL: two replicas (two engines on one
database) count against one limit, even when they hit at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from nixfleet.storage import streamseats
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade
from nixfleet.storage.ratecounts import WindowCounts, retry_after
from nixfleet.storage.tables import rate_counts


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def two_engines(pg_cluster) -> AsyncIterator[tuple[Database, Database]]:
    name = pg_cluster.create_database()
    url = pg_cluster.url(name)
    await asyncio.to_thread(upgrade, url)
    a, b = Database(url), Database(url)
    yield a, b
    await a.close()
    await b.close()
    pg_cluster.drop_database(name)


async def test_hits_on_two_replicas_count_against_one_limit(two_engines):
    clock = Clock(6000.0)
    a, b = (WindowCounts(db, clock) for db in two_engines)
    answers = [await (a if i % 2 else b).hit("login/198.51.100.7", 5, 60) for i in range(7)]
    assert answers[:5] == [None] * 5
    assert all(isinstance(w, int) and 1 <= w <= 60 for w in answers[5:])
    # Another address is counted apart.
    assert await a.hit("login/198.51.100.8", 5, 60) is None


async def test_simultaneous_hits_from_two_replicas_never_overshoot(two_engines):
    clock = Clock(6000.0)
    a, b = (WindowCounts(db, clock) for db in two_engines)
    answers = await asyncio.gather(*((a, b)[i % 2].hit("api/10.9.9.9", 10, 60) for i in range(60)))
    assert sum(w is None for w in answers) == 10


async def test_the_previous_window_still_weighs_on_the_sliding_window(two_engines):
    clock = Clock(6000.0)  # the start of a 60 s window
    counts = WindowCounts(two_engines[0], clock)
    for _ in range(10):
        assert await counts.hit("events/x", 10, 60) is None
    clock.now = 6060.0 + 30  # half way through the next window: 10 × 0.5 = 5 still count
    fit = [await counts.hit("events/x", 10, 60) for _ in range(7)]
    assert fit[:5] == [None] * 5 and None not in fit[5:]
    clock.now = 6060.0 + 60 + 1  # two windows on: all room again
    assert await counts.hit("events/x", 10, 60) is None


def test_the_retry_time_is_when_one_more_hit_fits():
    assert retry_after(10, 60, 20, prev=0, current=10) == 40  # until the window ends
    # 10 before, 5 now, at 30 s: 10 × (60 − t) / 60 + 6 ≤ 10 once t ≥ 36
    assert retry_after(10, 60, 30, prev=10, current=5) == pytest.approx(6)


async def test_counts_of_windows_gone_by_are_pruned(two_engines):
    db = two_engines[0]
    clock = Clock(6000.0)
    counts = WindowCounts(db, clock)
    for i in range(20):
        await counts.hit(f"api/10.0.0.{i}", 5, 1)
    clock.now += 120  # past PRUNE_EVERY_S: the next hit prunes what no window needs
    await counts.hit("api/10.0.0.99", 5, 1)
    async with db.engine.connect() as conn:
        left = (await conn.execute(select(func.count()).select_from(rate_counts))).scalar_one()
    assert left == 1


CAPS = streamseats.Caps(per_session=2, per_address=3, total=4)


async def test_stream_caps_count_the_seats_of_every_replica(two_engines):
    a, b = two_engines
    seat1, _ = await streamseats.take(a, "ra", "s1", "10.0.0.1", CAPS, 100.0, 15)
    seat2, _ = await streamseats.take(b, "rb", "s1", "10.0.0.2", CAPS, 100.0, 15)
    assert seat1 and seat2
    seat, why = await streamseats.take(a, "ra", "s1", "10.0.0.3", CAPS, 100.0, 15)
    assert seat is None and why == "this session already has 2 open event streams"
    await streamseats.take(b, "rb", "s2", "10.0.0.9", CAPS, 100.0, 15)
    await streamseats.take(b, "rb", "s3", "10.0.0.9", CAPS, 100.0, 15)
    seat, why = await streamseats.take(a, "ra", "s4", "10.0.0.9", CAPS, 100.0, 15)
    assert seat is None and why == "the dashboard already serves 4 open event streams"
    await streamseats.give_back(b, [seat2])  # a stream closes: its place is free again
    seat, _ = await streamseats.take(a, "ra", "s4", "10.0.0.9", CAPS, 100.0, 15)
    assert seat is not None
    seat, why = await streamseats.take(a, "ra", "s5", "10.0.0.8", CAPS, 100.0, 15)
    assert why == "the dashboard already serves 4 open event streams"


async def test_the_seats_of_a_replica_that_stopped_renewing_lapse(two_engines):
    a, b = two_engines
    kept, _ = await streamseats.take(a, "ra", "s1", "10.0.0.1", CAPS, 100.0, 15)
    await streamseats.take(b, "rb", "s1", "10.0.0.1", CAPS, 100.0, 15)  # b dies after this
    assert (await streamseats.take(a, "ra", "s1", "10.0.0.1", CAPS, 101.0, 15))[0] is None
    assert kept
    await streamseats.renew(a, [kept], 110.0, 15)  # only a renews
    assert await streamseats.count(a, 116.0) == 1
    seat, why = await streamseats.take(a, "ra", "s1", "10.0.0.1", CAPS, 116.0, 15)
    assert seat is not None and why is None


async def test_simultaneous_stream_opens_on_two_replicas_never_overshoot(two_engines):
    a, b = two_engines
    caps = streamseats.Caps(per_session=100, per_address=5, total=100)
    taken = await asyncio.gather(
        *(
            streamseats.take((a, b)[i % 2], "r", f"s{i}", "10.0.0.5", caps, 100.0, 15)
            for i in range(20)
        )
    )
    assert sum(seat is not None for seat, _ in taken) == 5
