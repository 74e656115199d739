"""The audit log records user actions with who, what, where and result; the chain verifies,
and `nixfleet admin audit verify` names an edited or a deleted entry."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import wait_for
from nixfleet.core import audit as chain


def audit_cli(fleet, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEET_")}
    env = {**clean, **fleet.fleet.env, "NIXFLEET_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    return subprocess.run(
        [sys.executable, "-m", "nixfleet", "admin", "audit", "verify", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def copy_db(fleet, dest: Path) -> Path:
    """Return a consistent copy of the live database (the WAL included)."""
    with sqlite3.connect(fleet.fleet.root / "dashboard" / "nixfleet.db") as src:
        dst = sqlite3.connect(dest)
        src.backup(dst)
        dst.close()
    return dest


@pytest.fixture
def audited(make_fleet):
    """A fleet where a user did one of each action; returns (fleet, api, entries)."""
    fleet = make_fleet(hosts=2, agents=False)
    bad = httpx.post(f"{fleet.base}/login", data={"username": "admin", "password": "nope"})
    assert bad.status_code == 401
    api = fleet.api()
    assert api.post("/api/hosts", {"host_id": "web-01"}).status_code == 201
    api.command("atlas", "switch")
    assert api.post("/api/hosts/nosuch/command", {"command": "switch"}).status_code == 404
    bulk = api.post("/api/commands/bulk", {"command": "pull", "host_ids": ["atlas", "nope"]})
    assert bulk.status_code == 202
    assert api.post("/api/hosts/web-01/agent-token").status_code == 200
    assert api.http.delete("/api/hosts/web-01", headers={"X-CSRF-Token": api.csrf}).is_success

    def entries() -> list[dict] | None:
        found = api.get("/api/audit").json()["entries"]
        return found if len(found) >= 8 else None

    return fleet, api, wait_for(entries, what="eight audit entries")


def test_every_user_action_is_recorded_with_who_what_where_and_result(audited):
    _, _, entries = audited
    got = [(e["action"], e["host"], e["result"]) for e in reversed(entries)]
    assert got == [
        ("login", "", "refused"),
        ("login", "", "ok"),
        ("host_add", "web-01", "ok"),
        ("command", "atlas", "accepted"),
        ("command", "nosuch", "not_found"),
        ("bulk_command", "", "partial (1 refused)"),
        ("token_rotate", "web-01", "ok"),
        ("host_remove", "web-01", "ok"),
    ]
    assert all(e["actor"] == "admin" and e["address"] == "127.0.0.1" for e in entries)
    bulk = next(e for e in entries if e["action"] == "bulk_command")
    assert bulk["detail"] == {"command": "pull", "hosts": ["atlas", "nope"], "refused": ["nope"]}
    assert [e["seq"] for e in entries] == sorted((e["seq"] for e in entries), reverse=True)


def test_the_log_filters_and_exports_json_lines(audited):
    _, api, _ = audited
    only = api.get("/api/audit?action=command&host=atlas").json()["entries"]
    assert [(e["action"], e["host"]) for e in only] == [("command", "atlas")]
    assert api.get("/api/audit?actor=someone-else").json()["entries"] == []
    future = api.get("/api/audit?since=2999-01-01T00:00").json()["entries"]
    assert future == []
    res = api.get("/api/audit?format=jsonl")
    assert res.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in res.text.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert all(len(e["hash"]) == 64 for e in lines)
    assert lines[1]["prev_hash"] == lines[0]["hash"]
    bad = api.get("/api/audit?since=yesterday")
    assert bad.status_code == 422 and bad.json()["error"] == "invalid"


def test_the_audit_page_shows_entries_with_filters(audited):
    _, api, _ = audited
    page = api.get("/audit?action=host_add")
    assert page.status_code == 200
    assert "web-01" in page.text and "host_add" in page.text
    assert "token_rotate</td>" not in page.text


def test_verify_passes_then_names_an_edited_and_a_deleted_entry(audited, tmp_path):
    fleet, _, entries = audited
    intact = copy_db(fleet, tmp_path / "intact.db")
    res = audit_cli(fleet, intact)
    assert res.returncode == 0, res.stderr
    assert f"{len(entries)} entries verified" in res.stdout

    edited = copy_db(fleet, tmp_path / "edited.db")
    with sqlite3.connect(edited) as conn:
        conn.execute("UPDATE audit_log SET actor='mallory' WHERE seq=4")
    res = audit_cli(fleet, edited)
    assert res.returncode == 1
    assert "chain broken at entry 4" in res.stderr

    deleted = copy_db(fleet, tmp_path / "deleted.db")
    with sqlite3.connect(deleted) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq=3")
    res = audit_cli(fleet, deleted)
    assert res.returncode == 1
    assert "chain broken at entry 3: entry 3 is missing" in res.stderr


def _rehash_from(conn: sqlite3.Connection, first: int) -> None:
    """Recompute every hash from entry `first` on, as an attacker with the database can."""
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY seq")]
    prev = rows[first - 2]["hash"] if first > 1 else chain.GENESIS
    for row in rows[first - 1 :]:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
        new = chain.entry_hash(prev, row)
        conn.execute(
            "UPDATE audit_log SET prev_hash=?, hash=? WHERE seq=?", (prev, new, row["seq"])
        )
        prev = new


def test_verify_catches_a_cut_off_end_a_rebuilt_chain_and_a_forged_row(audited, tmp_path):
    fleet, _, entries = audited
    last = len(entries)

    cut = copy_db(fleet, tmp_path / "cut.db")
    with sqlite3.connect(cut) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq=(SELECT max(seq) FROM audit_log)")
    res = audit_cli(fleet, cut)
    assert res.returncode == 1
    assert f"entry {last} is in the signed anchor but the chain ends at {last - 1}" in res.stderr

    rebuilt = copy_db(fleet, tmp_path / "rebuilt.db")
    with sqlite3.connect(rebuilt) as conn:
        conn.execute("UPDATE audit_log SET actor='mallory' WHERE seq=4")
        _rehash_from(conn, 4)
    res = audit_cli(fleet, rebuilt)
    assert res.returncode == 1
    assert "chain broken at entry 4: its signature does not match" in res.stderr

    for mac in (None, "0" * 64):
        forged = copy_db(fleet, tmp_path / f"forged-{mac}.db")
        with sqlite3.connect(forged) as conn:
            conn.row_factory = sqlite3.Row
            head = dict(conn.execute("SELECT * FROM audit_log ORDER BY seq DESC").fetchone())
            row = {**head, "seq": last + 1, "actor": "admin", "action": "host_remove"}
            row["detail"], row["prev_hash"] = None, head["hash"]
            row["hash"], row["mac"] = chain.entry_hash(head["hash"], row), mac
            conn.execute(
                "INSERT INTO audit_log VALUES (:seq, :at, :actor, :action, :host, :address,"
                " :result, :detail, :prev_hash, :hash, :mac)",
                row,
            )
        res = audit_cli(fleet, forged)
        assert res.returncode == 1
        assert f"chain broken at entry {last + 1}" in res.stderr


def test_a_recorded_head_still_verifies_after_new_entries(audited, tmp_path):
    fleet, api, entries = audited
    res = audit_cli(fleet, copy_db(fleet, tmp_path / "then.db"))
    head = res.stdout.split("head ")[1].strip()
    assert head.startswith(f"{len(entries)}:")
    assert api.post("/api/hosts", {"host_id": "web-02"}).status_code == 201
    now = copy_db(fleet, tmp_path / "now.db")
    for recorded in (head, head.split(":")[1]):  # SEQ:HASH as printed, or the bare hash
        res = audit_cli(fleet, now, "--head", recorded)
        assert res.returncode == 0, res.stderr
        assert f"{len(entries) + 1} entries verified" in res.stdout
    with sqlite3.connect(now) as conn:
        conn.execute(f"DELETE FROM audit_log WHERE seq >= {len(entries)}")
    res = audit_cli(fleet, now, "--head", head)
    assert res.returncode == 1
