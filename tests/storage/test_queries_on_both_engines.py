"""Every storage module behaves the same on SQLite and on PostgreSQL: idempotent replays,
guarded claims that two replicas cannot both win, cascades, and text PostgreSQL cannot hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from conftest import Backend
from nixfleet.core.commands import CommandState
from nixfleet.core.errors import Conflict, NotFound
from nixfleet.core.roles import Role
from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.storage import (
    audit,
    changes,
    commands,
    credentials,
    hosts,
    output,
    security_events,
    totp,
    users,
)
from nixfleet.storage import sessions as session_store
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade

NOW = 1_760_000_000.123456


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, backend.url)
    database = Database(backend.url)
    yield database
    await database.close()


@pytest.fixture
async def replica(backend: Backend, db: Database) -> AsyncIterator[Database]:
    """A second handle on the same database, as a second dashboard process has."""
    database = Database(backend.url)
    yield database
    await database.close()


def _command(cid: str, host: str, kind: str = "switch", at: float = NOW) -> dict[str, object]:
    return {
        "id": cid,
        "host_id": host,
        "kind": kind,
        "state": CommandState.QUEUED,
        "actor": "admin",
        "created_at": at,
        "expires_at": at + 3600,
    }


async def test_hosts_are_added_once_listed_in_order_and_keep_exact_times(db):
    await hosts.add(db, "web-02", None, NOW, {"location": "rack B"})
    await hosts.add(db, "web-01", "ab" * 32, NOW, {})
    with pytest.raises(Conflict):
        await hosts.add(db, "web-01", None, NOW, {})
    rows = await hosts.list_all(db)
    assert [r["id"] for r in rows] == ["web-01", "web-02"]
    assert rows[0]["created_at"] == NOW
    assert rows[0]["identity_state"] == "active" and rows[1]["identity_state"] == "none"
    assert "token_hash" not in rows[0]
    assert rows[1]["online"] is False


async def test_a_host_connects_reports_and_disconnects(db):
    await hosts.add(db, "atlas", None, NOW, {})
    status = {"hostname": "atlas", "load1": 0.5, "generation": 3}
    await hosts.mark_connected(db, "atlas", status, NOW, link={"breaker": "closed"})
    await hosts.mark_connected(
        db, "atlas", status, NOW + 5, link={"breaker": "half_open"}, fields={"location": "B"}
    )
    await hosts.save_statuses(db, {"atlas": ({**status, "load1": 2.25}, NOW + 10)})
    row = await hosts.get(db, "atlas")
    assert row["online"] is True and row["status"]["load1"] == 2.25
    assert row["last_seen"] == NOW + 10
    assert row["connection"] == {"reconnects": [NOW + 5], "breaker": "half_open"}
    assert row["location"] == "B" and row["connected_at"] == NOW + 5
    await hosts.mark_disconnected(db, "atlas", NOW + 20)
    assert (await hosts.get(db, "atlas"))["online"] is False
    await hosts.mark_connected(db, "atlas", status, NOW + 30)
    await hosts.mark_all_offline(db)
    assert [h["online"] for h in await hosts.get_many(db, ["atlas", "nobody"])] == [False]
    with pytest.raises(NotFound):  # a host removed while its agent shook hands
        await hosts.mark_connected(db, "nobody", status, NOW + 40)


async def test_hosts_whose_statuses_were_just_stored_read_as_if_read_back(db):
    await hosts.add(db, "atlas", None, NOW, {"location": "rack A"})
    await hosts.add(db, "borg", None, NOW, {})
    group = {"atlas": ({"hostname": "atlas", "load1": 0.5}, NOW), "nobody": ({}, NOW)}
    await hosts.save_statuses(db, group)
    reported = {h: st for h, (st, _) in group.items()}
    got = await hosts.get_many_reported(db, reported)
    assert got == await hosts.get_many(db, ["atlas"])  # the same row, columns in order
    assert list(got[0]) == list((await hosts.get_many(db, ["atlas"]))[0])
    assert got[0]["status"] == {"hostname": "atlas", "load1": 0.5}


async def test_removing_a_host_removes_its_commands_and_output(db):
    await hosts.add(db, "atlas", None, NOW, {})
    await commands.enqueue(db, _command("c1", "atlas"), supersede=False)
    await output.append(db, "c1", [{"seq": 1, "stream": "stdout", "text": "x"}], NOW)
    await hosts.remove(db, "atlas")
    with pytest.raises(NotFound):
        await commands.get(db, "c1")
    assert await output.lines(db, "c1") == []
    with pytest.raises(NotFound):
        await hosts.remove(db, "atlas")


async def test_a_newer_switch_supersedes_the_queued_one(db):
    await hosts.add(db, "atlas", None, NOW, {})
    assert await commands.enqueue(db, _command("c1", "atlas"), supersede=True) == []
    assert await commands.enqueue(db, _command("c2", "atlas", at=NOW + 1), supersede=True) == ["c1"]
    old = await commands.get(db, "c1")
    assert old["state"] == CommandState.CANCELLED and old["detail"] == "superseded by c2"
    queued = await commands.for_host(db, "atlas", [CommandState.QUEUED])
    assert [c["id"] for c in queued] == ["c2"]


async def test_two_replicas_claiming_the_same_commands_never_both_get_one(db, replica):
    ids = [f"c{i:03d}" for i in range(120)]
    for h in range(6):
        await hosts.add(db, f"h{h}", None, NOW, {})
    await commands.enqueue_many(
        db, [_command(cid, f"h{i % 6}", "test") for i, cid in enumerate(ids)], supersede=False
    )

    async def claims(database: Database, order: list[str]) -> list[str]:
        got: list[str] = []
        for i in range(0, len(order), 10):
            got += [r["id"] for r in await commands.claim(database, order[i : i + 10], NOW)]
        return got

    a, b = await asyncio.gather(claims(db, ids), claims(replica, ids[::-1]))
    assert sorted(a + b) == ids  # every command claimed, none twice
    assert not set(a) & set(b)
    rows = await commands.get_many(db, ids)
    assert {r["state"] for r in rows} == {CommandState.DISPATCHED}


async def test_a_guarded_move_happens_once_and_an_illegal_one_is_refused(db, replica):
    await hosts.add(db, "atlas", None, NOW, {})
    await commands.enqueue(db, _command("c1", "atlas"), supersede=False)
    moves = await asyncio.gather(
        *(
            commands.move(d, "c1", "atlas", [CommandState.QUEUED], CommandState.CANCELLED)
            for d in (db, replica, db, replica)
        )
    )
    assert sorted(moves) == [False, False, False, True]
    with pytest.raises(ValueError):
        await commands.move(db, "c1", "atlas", [CommandState.CANCELLED], CommandState.RUNNING)


async def test_expiry_and_the_reconnect_window(db):
    await hosts.add(db, "atlas", None, NOW, {})
    await commands.enqueue(db, {**_command("old", "atlas"), "expires_at": NOW - 1}, False)
    await commands.enqueue(db, _command("run", "atlas", "test"), False)
    assert [r["id"] for r in await commands.expire_queued(db, NOW)] == ["old"]
    assert [r["id"] for r in await commands.claim(db, ["run"], NOW)] == ["run"]
    assert await commands.busy_hosts(db, ["atlas", "idle"]) == {"atlas"}
    await hosts.mark_disconnected(db, "atlas", NOW)
    # Dropping again before any hello re-attached it does not restart the window.
    await hosts.mark_disconnected(db, "atlas", NOW + 60)
    assert (await commands.get(db, "run"))["disconnected_at"] == NOW
    assert await commands.lose_abandoned(db, NOW - 1, NOW) == []
    lost = await commands.lose_abandoned(db, NOW + 90, NOW + 91)
    assert lost == [{"id": "run", "host_id": "atlas"}]
    assert await commands.deliverable_many(db, ["atlas"], NOW) == []


async def test_a_host_that_goes_offline_has_its_running_command_in_the_window_at_once(db):
    await hosts.add(db, "atlas", None, NOW, {})
    await commands.enqueue(db, _command("run", "atlas", "test"), False)
    await commands.claim(db, ["run"], NOW)
    await hosts.mark_connected(db, "atlas", {"hostname": "atlas"}, NOW, "replica-b")
    # The replica it left does not hold it any more: nothing changes, it says so.
    assert await hosts.mark_disconnected(db, "atlas", NOW + 5, "replica-a") is False
    assert (await commands.get(db, "run"))["disconnected_at"] is None
    # The replica that holds it: offline and in the reconnect window in one write, so no
    # reader (or a replica killed between two writes) sees one without the other.
    assert await hosts.mark_disconnected(db, "atlas", NOW + 10, "replica-b") is True
    assert (await hosts.get(db, "atlas"))["online"] is False
    assert (await commands.get(db, "run"))["disconnected_at"] == NOW + 10


async def test_output_replays_are_dropped_and_nul_bytes_do_not_break_the_insert(db):
    await hosts.add(db, "atlas", None, NOW, {})
    await commands.enqueue(db, _command("c1", "atlas"), supersede=False)
    first = [{"seq": s, "stream": "stdout", "text": f"line {s}"} for s in (1, 2, 3)]
    await output.append(db, "c1", first, NOW)
    replay = [
        {"seq": 2, "stream": "stdout", "text": "changed"},
        {"seq": 4, "stream": "stderr", "text": "nul\x00inside"},
    ]
    await output.append(db, "c1", replay, NOW)
    got = await output.lines(db, "c1")
    assert [ln["seq"] for ln in got] == [1, 2, 3, 4]
    assert got[1]["text"] == "line 2"
    # PostgreSQL text cannot hold NUL; the line is kept, the NUL shown as U+FFFD there.
    assert got[3]["text"] in {"nul\x00inside", "nul\ufffdinside"}
    assert [ln["seq"] for ln in await output.lines(db, "c1", after_seq=2, limit=1)] == [3]


async def test_status_json_keeps_unusual_text(db):
    await hosts.add(db, "atlas", None, NOW, {})
    status = {"hostname": "at\x00las", "os_version": "ünïcödé ✓", "nested": {"a": [1, 2.5]}}
    await hosts.mark_connected(db, "atlas", status, NOW)
    assert (await hosts.get(db, "atlas"))["status"] == status


async def test_sessions_are_stored_touched_and_logged_out_everywhere(db):
    await session_store.create(db, "h1", "admin", "csrf1", NOW, "192.0.2.1")
    await session_store.create(db, "h2", "admin", "csrf2", NOW, "2001:db8::1")
    await session_store.touch(db, "h1", NOW + 60)
    assert (await session_store.get(db, "h1"))["last_seen"] == NOW + 60
    assert sorted(await session_store.delete_for_user(db, "admin")) == ["h1", "h2"]
    assert await session_store.get(db, "h2") is None


async def test_a_session_is_read_with_its_users_role_and_state_in_one_go(db):
    await users.add(db, "ada", "hash", Role.ADMIN)  # one admin must stay enabled
    await users.add(db, "vera", "hash", Role.VIEWER)
    await users.add(db, "otto", "hash", Role.OPERATOR)
    for n, name in enumerate(("vera", "otto", "gone")):
        await session_store.create(db, f"s{n}", name, "csrf", NOW, "192.0.2.1")
    await users.change(db, "otto", disabled=True)
    seen = [await session_store.get_with_user(db, f"s{n}") for n in range(3)]
    assert [(s["username"], s["role"], bool(s["disabled"])) for s in seen[:2]] == [
        ("vera", "viewer", False),
        ("otto", "operator", True),
    ]
    assert (seen[2]["role"], seen[2]["disabled"]) == (None, None)  # no such user
    assert await session_store.get_with_user(db, "nobody") is None


async def test_a_totp_step_is_claimed_once_across_replicas(db, replica):
    wins = await asyncio.gather(*(totp.claim_step(d, "admin", 100) for d in (db, replica) * 3))
    assert wins.count(True) == 1
    assert await totp.claim_step(replica, "admin", 101)
    assert not await totp.claim_step(db, "admin", 100)


async def test_an_enrollment_code_is_redeemed_once_across_replicas(db, replica):
    await hosts.add(db, "atlas", None, NOW, {})
    await credentials.add_enroll_code(db, "atlas", "c" * 64, NOW, NOW + 3600)
    outcomes = await asyncio.gather(
        *(
            credentials.redeem_enroll_code(d, "atlas", "c" * 64, f"{i}" * 64, NOW, "192.0.2.9")
            for i, d in enumerate((db, replica, db, replica))
        )
    )
    assert sorted(outcomes) == ["ok", "used", "used", "used"]
    ident = await credentials.identity(db, "atlas")
    assert ident is not None and ident.identity_state == "active"


async def test_revokes_and_rotations_racing_from_two_replicas_all_succeed(db, replica):
    """Two admins (or a CLI and a replica) acting on one host at the same moment: every
    request succeeds (none fails on the database, a 500 before), the old token retired once."""
    names = [f"host-{i}" for i in range(12)]
    for i, name in enumerate(names):
        await hosts.add(db, name, f"{i:064x}", NOW, {})
    steps = []
    for i, name in enumerate(names):
        steps += [
            credentials.revoke(db, name, NOW),
            credentials.revoke(replica, name, NOW),
            credentials.replace_token(db, name, f"{i + 100:064x}", NOW, None),
        ]
    await asyncio.gather(*steps)
    for i, name in enumerate(names):
        old = await credentials.retired(db, f"{i:064x}")
        assert old is not None and old["host_id"] == name


async def test_every_credential_change_moves_the_counter_another_replica_reads(db, replica):
    """The live-credential check runs only when this counter moved: a change it missed
    would leave a revoked agent connected (the CLI and replicas write too)."""

    async def seen() -> tuple[int, int]:
        return (
            await changes.read(replica, changes.CREDENTIALS),
            await changes.read(replica, changes.HOSTS),
        )

    assert await seen() == (0, 0)
    await hosts.add(db, "atlas", None, NOW, {})
    await hosts.add(db, "borealis", "b" * 64, NOW, {})
    assert await seen() == (0, 2)
    steps = [
        credentials.claim_first_token(db, "atlas", "a" * 64),
        credentials.replace_token(db, "atlas", "1" * 64, NOW, NOW + 60),
        credentials.revoke(db, "atlas", NOW),
    ]
    for i, step in enumerate(steps, start=1):
        await step
        assert await seen() == (i, 2)
    await credentials.add_enroll_code(db, "atlas", "c" * 64, NOW, NOW + 3600)
    assert await credentials.redeem_enroll_code(db, "atlas", "c" * 64, "2" * 64, NOW, "x") == "ok"
    assert await seen() == (4, 2)
    # What happens all day on a connected fleet moves neither counter.
    await credentials.note_use(db, "atlas", NOW, "192.0.2.9")
    await hosts.save_statuses(db, {"atlas": ({"load": 0.5}, NOW)})
    assert await seen() == (4, 2)
    await hosts.remove(db, "borealis")
    assert await seen() == (5, 3)
    # A write that bypasses the store functions (a script, a future one) counts too.
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE hosts SET token_hash = NULL WHERE id = 'atlas'"))
    assert await seen() == (6, 3)
    # Changes racing from two replicas are all counted.
    await asyncio.gather(
        *(hosts.add(d, f"web-{i}", None, NOW, {}) for i, d in enumerate((db, replica) * 3))
    )
    assert await seen() == (6, 9)


async def test_security_events_are_stored_summarised_and_pruned(db):
    events = [
        SecurityEvent(EventKind.AUTH_FAILURE, "refused", address="192.0.2.7", at=NOW + i)
        for i in range(3)
    ]
    await security_events.add_many(db, events)
    assert len(await security_events.recent(db, NOW)) == 3
    assert await security_events.failure_times(db, NOW + 1) == [NOW + 1, NOW + 2]
    assert await security_events.top_addresses(db, NOW) == [{"address": "192.0.2.7", "count": 3}]
    assert await security_events.prune(db, NOW + 2) == 2


async def test_two_replicas_appending_to_the_audit_log_never_fork_the_chain(db, replica):
    async def writer(database: Database, name: str) -> None:
        for i in range(8):
            entry = {
                "at": NOW + i,
                "actor": name,
                "action": "command",
                "host": "atlas",
                "address": "",
                "result": "ok",
                "detail": {"n": i, "ratio": 0.1},
            }
            await audit.append(database, entry, b"audit key for the test")

    await asyncio.gather(writer(db, "a"), writer(replica, "b"))
    result = await audit.verify(db, b"audit key for the test")
    assert (result.count, result.broken, result.unsigned) == (16, None, 0)


async def test_output_past_the_quota_becomes_one_marker_and_the_rest_is_dropped(db):
    await hosts.add(db, "atlas", None, NOW, {})
    await commands.enqueue(db, _command("c1", "atlas"), supersede=False)
    lines = [{"seq": s, "stream": "stdout", "text": "x" * 1000} for s in range(1, 11)]
    stored = await output.append(db, "c1", lines[:5], NOW, max_bytes=7000)
    assert (len(stored.lines), stored.truncated) == (5, False)
    stored = await output.append(db, "c1", lines[5:], NOW, max_bytes=7000)
    assert stored.truncated
    got = await output.lines(db, "c1")
    assert [ln["seq"] for ln in got] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert got[-1]["stream"] == "system" and "output truncated" in got[-1]["text"]
    later = [{"seq": 11, "stream": "stdout", "text": "late"}]
    assert (await output.append(db, "c1", later, NOW, max_bytes=7000)).lines == []
    row = await commands.get(db, "c1")
    assert (row["output_bytes"], row["output_truncated"]) == (7000, True)


async def test_old_output_is_pruned_and_the_command_row_kept(db):
    await hosts.add(db, "atlas", None, NOW, {})
    for cid, finished in (("old", NOW - 90 * 86400), ("new", NOW - 60)):
        await commands.enqueue(db, _command(cid, "atlas"), supersede=False)
        await commands.set_fields(db, cid, "atlas", finished_at=finished)
        await output.append(db, cid, [{"seq": 1, "stream": "stdout", "text": cid}], NOW)
    assert await output.prune(db, NOW - 30 * 86400) == 1
    assert await output.prune(db, NOW - 30 * 86400) == 0
    assert await output.lines(db, "old") == []
    assert [ln["text"] for ln in await output.lines(db, "new")] == ["new"]
    assert (await commands.get(db, "old"))["output_pruned"] is True


async def test_start_up_opens_the_reconnect_window_of_active_commands_only(db):
    await hosts.add(db, "atlas", None, NOW, {})
    await commands.enqueue(db, _command("run", "atlas"), supersede=False)
    await commands.enqueue(db, _command("wait", "atlas", kind="test"), supersede=False)
    await commands.claim(db, ["run"], NOW)
    assert await commands.open_reconnect_windows(db, NOW + 5) == 1
    assert (await commands.get(db, "run"))["disconnected_at"] == NOW + 5
    assert (await commands.get(db, "wait"))["disconnected_at"] is None
    lost = await commands.lose_abandoned(db, NOW + 6, NOW + 6)
    assert [r["id"] for r in lost] == ["run"]


async def test_a_field_update_guarded_by_state_leaves_a_final_command_alone(db):
    await hosts.add(db, "atlas", None, NOW, {})
    await commands.enqueue(db, _command("c1", "atlas"), supersede=False)
    assert await commands.move(
        db, "c1", "atlas", [CommandState.QUEUED], CommandState.CANCELLED, detail="kept"
    )
    active = [CommandState.DISPATCHED, CommandState.RUNNING]
    assert not await commands.set_fields(db, "c1", "atlas", active, detail="rewritten")
    assert (await commands.get(db, "c1"))["detail"] == "kept"


async def test_simultaneous_audit_entries_on_two_replicas_are_all_stored_in_one_chain(db, replica):
    from nixfleet.dashboard.monitoring.audit_log import AuditLog

    key = b"audit key for the test"
    logs = [AuditLog(database, key, None, 30) for database in (db, replica)]
    # 2 × 60 requests recording at once: each replica groups what waits into one append.
    await asyncio.gather(
        *(
            logs[i % 2].record(f"user{i % 2}", "command", host="atlas", detail={"n": i})
            for i in range(120)
        )
    )
    result = await audit.verify(db, key)
    assert (result.count, result.broken, result.unsigned) == (120, None, 0)
    stored = await audit.search(db, limit=500)
    assert sorted(e["detail"]["n"] for e in stored) == list(range(120))


async def test_a_gated_command_has_its_gate_on_top_of_the_reconnect_window(db):
    await hosts.add(db, "atlas", None, NOW, {})
    await hosts.add(db, "borealis", None, NOW, {})
    gated = {**_command("gated", "atlas"), "gate": {"deadline_s": 300, "confirm": True}}
    await commands.enqueue(db, gated, False)
    await commands.enqueue(db, _command("plain", "borealis"), False)
    await commands.claim(db, ["gated", "plain"], NOW)
    for host in ("atlas", "borealis"):
        await hosts.mark_disconnected(db, host, NOW)
    # 90 s window: the plain one is lost at once, the gated one only past 300 s + 90 s.
    assert await commands.lose_abandoned(db, NOW + 1, NOW + 91) == [
        {"id": "plain", "host_id": "borealis"}
    ]
    assert await commands.lose_abandoned(db, NOW + 299, NOW + 389) == []
    assert await commands.lose_abandoned(db, NOW + 301, NOW + 391) == [
        {"id": "gated", "host_id": "atlas"}
    ]
    (row,) = await commands.get_many(db, ["gated"])
    assert row["state"] == "lost" and "health gate" in row["detail"]
