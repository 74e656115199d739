"""Migration 0003 keeps existing hosts working: a host with a token becomes `active`."""

from __future__ import annotations

import sqlite3

from nixfleet.storage.migrate import upgrade


def test_hosts_with_a_token_stay_active_after_the_identity_migration(tmp_path):
    db = tmp_path / "nixfleet.db"
    url = f"sqlite+aiosqlite:///{db}"
    upgrade(url, "0001")
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO hosts (id, created_at, token_hash) VALUES ('a', 0, 'ab')")
        conn.execute("INSERT INTO hosts (id, created_at) VALUES ('b', 0)")
    upgrade(url, "0003")
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("SELECT id, identity_state FROM hosts").fetchall())
        assert states == {"a": "active", "b": "none"}
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"retired_tokens", "enroll_codes", "ix_hosts_token_hash"} <= tables
