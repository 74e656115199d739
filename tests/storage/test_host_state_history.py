"""A host's state history stays bounded: at most ROWS_PER_HOST rows per host (the oldest
go first, and one flapping host never trims another's), pruned by age, and removed with
its host. A change is stored once however many writers (replicas) race to store it, and a
host between two systems is told apart from a settled one. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from nixfleet.core.commands import CommandState
from nixfleet.storage import commands, host_states, hosts
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
    assert latest == {
        ("flappy", "connection"): ("online", ""),
        ("steady", "connection"): ("online", ""),
    }


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


def deploy(host_id: str, at: float, value: str, commit: str) -> dict[str, object]:
    return {"host_id": host_id, "at": at, "field": "deploy", "value": value, "detail": commit}


async def test_writers_racing_to_store_the_same_changes_store_each_once(db, backend):
    # Four replicas, each with its own connections, see the same three changes of one host
    # and store them at the same moment; then one of them sees the last change again.
    changes = [
        deploy("steady", NOW, "behind", "aaaa"),
        deploy("steady", NOW + 1, "current", "bbbb"),
        change("steady", 1),
    ]
    writers = [Database(backend.url) for _ in range(4)]
    try:
        for step in range(len(changes)):
            done = await asyncio.gather(*(host_states.record(w, [changes[step]]) for w in writers))
            assert all(done)
        assert await host_states.record(db, [changes[1]])
    finally:
        for w in writers:
            await w.close()
    rows = await host_states.for_host(db, "steady", 100)
    assert [(r["field"], r["value"], r["detail"]) for r in reversed(rows)] == [
        ("deploy", "behind", "aaaa"),
        ("deploy", "current", "bbbb"),
        ("connection", "online", ""),
    ]
    # The same state on another commit is news (a deploy that kept the host current);
    # so is going back to a value stored before.
    assert await host_states.record(
        db, [deploy("steady", NOW + 2, "current", "cccc"), change("steady", 2)]
    )
    assert await host_states.latest(db, ["steady"]) == {
        ("steady", "deploy"): ("current", "cccc"),
        ("steady", "connection"): ("offline", ""),
    }


async def test_one_hosts_history_being_written_never_holds_up_another_hosts(pg_db):
    # Replicas store different hosts' changes side by side; only writers of the same host
    # wait for each other. PostgreSQL only: SQLite has one writer for everything.
    db = pg_db
    for host_id in ("flappy", "steady"):
        await hosts.add(db, host_id, None, NOW, {})
    other = Database(db.url)
    try:
        async with other.engine.begin() as conn:
            # Another replica is midway through storing flappy's changes.
            await other.write_locks(conn, ["nixfleet.host_states:flappy"])
            assert await asyncio.wait_for(host_states.record(db, [change("steady", 1)]), 30)
            same_host = asyncio.ensure_future(host_states.record(db, [change("flappy", 1)]))
            await asyncio.sleep(0.5)
            assert not same_host.done()  # it waits for the other writer of flappy
        assert await asyncio.wait_for(same_host, 30)
    finally:
        await other.close()
    # Writers of overlapping sets of hosts, each listing them in its own order, all finish.
    writers = [Database(db.url) for _ in range(3)]
    try:
        batches = [
            [change(h, i) for h in order]
            for i, order in enumerate((["flappy", "steady"], ["steady", "flappy"]) * 3, start=2)
        ]
        done = await asyncio.wait_for(
            asyncio.gather(*(host_states.record(writers[i % 3], b) for i, b in enumerate(batches))),
            60,
        )
        assert all(done)
    finally:
        for w in writers:
            await w.close()
    for host_id in ("flappy", "steady"):  # and no change was stored twice in a row
        values = [r["value"] for r in await host_states.for_host(db, host_id, 100)]
        assert len(values) >= 2 and all(a != b for a, b in itertools.pairwise(values))


def command(cid: str, kind: str) -> dict[str, object]:
    return {
        "id": cid,
        "host_id": "steady",
        "kind": kind,
        "state": CommandState.QUEUED,
        "actor": "admin",
        "created_at": NOW,
        "expires_at": NOW + 3600,
    }


async def test_a_host_is_settling_from_its_switch_until_it_reports_after_it(db):
    async def move(cid: str, to: CommandState, **values: object) -> None:
        before = {
            CommandState.DISPATCHED: [CommandState.QUEUED],
            CommandState.RUNNING: [CommandState.DISPATCHED],
            CommandState.SUCCEEDED: [CommandState.RUNNING],
        }[to]
        assert await commands.move(db, cid, "steady", before, to, **values)

    await hosts.save_statuses(db, {"steady": ({}, NOW)})
    # A test run changes no system; a queued switch has not reached the host.
    await commands.enqueue(db, command("t1", "test"), supersede=False)
    await move("t1", CommandState.DISPATCHED, dispatched_at=NOW + 1)
    await commands.enqueue(db, command("s1", "pull-switch"), supersede=False)
    assert await host_states.settling(db, ["steady", "flappy"]) == set()

    await move("s1", CommandState.DISPATCHED, dispatched_at=NOW + 1)
    assert await host_states.settling(db, ["steady", "flappy"]) == {"steady"}
    await move("s1", CommandState.RUNNING, started_at=NOW + 2)
    await move("s1", CommandState.SUCCEEDED, finished_at=NOW + 10)
    # Finished, but the host's last report is from before: its outcome is still to come.
    assert await host_states.settling(db, ["steady"]) == {"steady"}
    await hosts.save_statuses(db, {"steady": ({}, NOW + 11)})
    assert await host_states.settling(db, ["steady"]) == set()
