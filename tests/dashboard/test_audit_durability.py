"""An action's audit entry is stored, or the action is refused: a database locked past its
timeout delays entries but loses none and answers 503 with Retry-After; a bulk command
with an id that is not valid text is refused whole; certificate binding is audited."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

import httpx
import pytest
import websockets

from conftest import wait_for
from rawagent import handshake_status

LOCK_S = 8.0


@pytest.fixture
def impatient(make_fleet):
    """A fleet whose database gives up on a lock after 1 s (instead of 10 s)."""
    return make_fleet(
        hosts=1,
        build_seconds=4,
        env={"NIXFLEET_DB_BUSY_TIMEOUT_S": "1", "NIXFLEET_AUDIT_WRITE_TIMEOUT_S": "1.5"},
    )


def _hold_write_lock(db_path, seconds: float) -> threading.Thread:
    """Hold SQLite's write lock from another connection (as another process would)."""
    taken = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    taken.wait(5)
    return holder


def test_a_locked_database_answers_503_and_loses_no_audit_entry_or_event(impatient):
    fleet = impatient
    db_path = fleet.fleet.root / "dashboard" / "nixfleet.db"
    api = fleet.api()
    before = len(api.get("/api/audit").json()["entries"])
    connected_at = api.host("atlas")["connected_at"]
    build = api.command("atlas", "switch")
    api.wait_state(build, {"running"}, 30)
    _hold_write_lock(db_path, LOCK_S)  # while the build's output streams in
    started = time.monotonic()
    add = api.post("/api/hosts", {"host_id": "web-07"})
    assert add.status_code == 503, add.text
    assert int(add.headers["retry-after"]) >= 1
    assert add.json()["error"] in ("database_busy", "unavailable")
    refused = [
        httpx.post(f"{fleet.base}/login", data={"username": "admin", "password": f"guess{i}"})
        for i in range(4)
    ]
    assert [r.status_code for r in refused] == [401] * 4
    login = httpx.post(
        f"{fleet.base}/login", data={"username": "admin", "password": fleet.fleet.password}
    )
    assert login.status_code in (503, 303)
    if login.status_code == 503:  # no entry, no session
        assert "nixfleet_session" not in login.cookies
    assert time.monotonic() - started < LOCK_S + 5  # (a bound, not a speed claim)

    def settled() -> list[dict] | None:
        found = api.get("/api/audit?limit=1000").json()["entries"]
        refused_logins = [e for e in found if e["action"] == "login" and e["result"] != "ok"]
        return found if len(refused_logins) >= 4 else None

    entries = wait_for(settled, 30, "the four refused logins in the audit log")
    assert not [e for e in entries if e["host"] == "web-07"]  # the refused add left nothing
    assert "web-07" not in {h["id"] for h in api.get("/api/hosts").json()["hosts"]}
    logins_ok = [e for e in entries[: len(entries) - before] if e["result"] == "ok"]
    assert len(logins_ok) == (1 if login.status_code == 303 else 0)
    # The stored security events are all there too, once their writer's backoff retry lands
    # (up to a few seconds after the lock is gone: they are queued, not lost).
    wait_for(
        lambda: api.get("/api/security/summary").json()["failures_24h"] >= 4,
        30,
        "the four refused logins in the security events",
    )
    text = (fleet.fleet.root / "dashboard.log").read_text()
    assert "unhandled error" not in text and "Traceback" not in text
    # The agent kept its socket through the lock, and the build lost no line.
    done = api.wait_state(build, {"succeeded", "failed"}, 60)
    assert done["state"] == "succeeded"
    assert api.host("atlas")["connected_at"] == connected_at
    seqs = [line["seq"] for line in done["output"]]
    assert seqs == list(range(1, len(seqs) + 1)) and seqs


def test_an_agent_handshake_on_a_locked_database_is_told_to_come_back(impatient):
    # Thousands of agents connecting at once meet a busy database: a 503 makes them retry.
    fleet = impatient
    db_path = fleet.fleet.root / "dashboard" / "nixfleet.db"
    token = fleet.host("atlas").token_file.read_text().strip()
    holder = _hold_write_lock(db_path, 3)
    assert asyncio.run(handshake_status(fleet.base, "atlas", token)) == 503
    text = (fleet.fleet.root / "dashboard.log").read_text()
    assert "unhandled error" not in text and "Traceback" not in text
    holder.join()  # a login meanwhile would be told to come back too
    fleet.api().wait_online(["atlas"])  # the lock gone, the agent is back


def test_an_agent_whose_database_locks_after_the_handshake_is_closed_with_try_again(make_fleet):
    # The handshake is answered, then the database locks before the hello is stored: the
    # agent is told 1013 (come back later) and the log has one line, not a traceback.
    fleet = make_fleet(hosts=1, agents=False, env={"NIXFLEET_DB_BUSY_TIMEOUT_S": "1"})
    db_path = fleet.fleet.root / "dashboard" / "nixfleet.db"
    token = fleet.host("atlas").token_file.read_text().strip()
    headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": "atlas"}
    url = fleet.base.replace("http://", "ws://") + "/api/agent/ws"
    hello = {"type": "hello", "protocol": 1, "host_id": "atlas", "agent_version": "t", "status": {}}

    async def attempt() -> tuple[int | None, str]:
        ws = await websockets.connect(url, additional_headers=headers, open_timeout=10)
        holder = _hold_write_lock(db_path, 4)
        await ws.send(json.dumps(hello))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 15)
        except websockets.ConnectionClosed as closed:
            holder.join()
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")

    code, reason = asyncio.run(attempt())
    assert code == 1013, (code, reason)
    assert "try again" in reason
    text = (fleet.fleet.root / "dashboard.log").read_text()
    assert "Exception in ASGI application" not in text and "Traceback" not in text
    assert "the database is unavailable" in text


def test_a_bulk_command_with_an_invalid_id_is_refused_whole(make_fleet):
    fleet = make_fleet(hosts=1, agents=False)
    api = fleet.api()
    before = api.get("/api/audit").json()["entries"]
    raw = b'{"command": "switch", "host_ids": ["atlas", "\\udcff"]}'
    res = api.http.post(
        "/api/commands/bulk",
        content=raw,
        headers={"X-CSRF-Token": api.csrf, "Content-Type": "application/json"},
    )
    assert res.status_code == 422, res.text
    assert "surrogate" in res.json()["detail"]
    assert api.get("/api/hosts/atlas/commands").json()["commands"] == []
    assert api.get("/api/audit").json()["entries"] == before


def test_binding_and_unbinding_a_client_certificate_is_audited(make_fleet):
    fleet = make_fleet(hosts=1, agents=False)
    api = fleet.api()
    sha = "ab" * 32
    assert api.http.put(
        "/api/hosts/atlas/client-cert", json={"sha256": sha}, headers={"X-CSRF-Token": api.csrf}
    ).is_success
    assert api.http.delete(
        "/api/hosts/atlas/client-cert", headers={"X-CSRF-Token": api.csrf}
    ).is_success
    found = api.get("/api/audit?action=cert_bind").json()["entries"]
    assert [(e["host"], e["actor"], (e["detail"] or {}).get("sha256")) for e in found] == [
        ("atlas", "admin", None),
        ("atlas", "admin", found[1]["detail"]["sha256"]),
    ]
    assert found[1]["detail"]["sha256"].replace(":", "").lower().startswith("abab")


def test_an_agent_waiting_on_a_busy_database_keeps_its_link_past_the_ping_timeout(make_fleet):
    # While its output waits for the database, the dashboard stops reading the agent's
    # socket, so the agent's pongs wait unread: that is the dashboard's delay, not a dead
    # agent, and the link (with the build's stream) stays up.
    env = {"NIXFLEET_DB_BUSY_TIMEOUT_S": "1", "NIXFLEET_AGENT_PING_S": "1"}
    fleet = make_fleet(hosts=1, build_seconds=6, env=env)
    db_path = fleet.fleet.root / "dashboard" / "nixfleet.db"
    api = fleet.api()
    connected_at = api.host("atlas")["connected_at"]
    build = api.command("atlas", "switch")
    api.wait_state(build, {"running"}, 30)
    _hold_write_lock(db_path, 5).join()  # five pings' worth of waiting
    done = api.wait_state(build, {"succeeded", "failed"}, 60)
    assert done["state"] == "succeeded"
    assert api.host("atlas")["connected_at"] == connected_at  # never reconnected
    seqs = [line["seq"] for line in done["output"]]
    assert seqs == list(range(1, len(seqs) + 1)) and seqs
    text = (fleet.fleet.root / "dashboard.log").read_text()
    assert "the database refused a message" in text  # its output did wait
