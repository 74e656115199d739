"""A host's state history stays bounded: at most ROWS_PER_HOST rows per host (the oldest
go first, and one flapping host never trims another's), pruned by age, and removed with
its host. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nixfleet.storage import host_states, hosts
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade

NOW = 1_760_000_000.0


@pytest.fixture
async def db(backend) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, backend.url)
    database = Database(backend.url)
    for host_id in ("flappy", "steady"):
        await hosts.add(database, host_id, None, NOW, {})
    yield database
    await database.close()


def change(host_id: str, i: int) -> dict[str, object]:
    value = "online" if i % 2 else "offline"
    return {"host_id": host_id, "at": NOW + i, "field": "connection", "value": value, "detail": ""}


async def test_a_flapping_host_keeps_only_its_newest_rows_and_trims_no_other(db):
    assert await host_states.record(db, [change("steady", 0), change("steady", 1)])
    for start in range(0, 500, 50):  # 500 changes in batches, as a flapping agent makes them
        assert await host_states.record(db, [change("flappy", i) for i in range(start, start + 50)])
    rows = await host_states.for_host(db, "flappy", 1000)
    assert len(rows) == host_states.ROWS_PER_HOST
    assert rows[0]["at"] == NOW + 499 and rows[-1]["at"] == NOW + 500 - host_states.ROWS_PER_HOST
    assert len(await host_states.for_host(db, "steady", 1000)) == 2
    latest = await host_states.latest(db, ["flappy", "steady"])
    assert latest == {("flappy", "connection"): "online", ("steady", "connection"): "online"}


async def test_old_rows_are_pruned_by_age_and_a_removed_host_takes_its_history(db):
    await host_states.record(db, [change("steady", i) for i in range(10)])
    assert await host_states.prune(db, NOW + 5) == 5
    assert [r["at"] for r in await host_states.for_host(db, "steady", 100)] == [
        NOW + i for i in range(9, 4, -1)
    ]
    await hosts.remove(db, "steady")
    assert await host_states.latest(db, ["steady"]) == {}
    # A change for a host removed meanwhile is dropped, not an error.
    assert await host_states.record(db, [change("steady", 11)]) is False
