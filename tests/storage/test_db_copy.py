"""`nixfleet db copy --to postgresql://…`: a fleet that outgrows SQLite moves to PostgreSQL
with its hosts, tokens, commands, output, sessions and an audit chain that still verifies."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest

from conftest import wait_for
from nixfleet.storage import hosts
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade
from nixfleet.storage.tables import hosts as hosts_table
from nixfleet.storage.transfer import TransferError, copy_all


def _nixfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "nixfleet", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _snapshot(api) -> dict:
    cmds = api.get("/api/hosts/atlas/commands").json()["commands"]
    return {
        "hosts": [
            {k: h[k] for k in ("id", "location", "device_type", "theme_color")}
            for h in api.get("/api/hosts").json()["hosts"]
        ],
        "commands": [(c["id"], c["kind"], c["state"]) for c in cmds],
        "output": {c["id"]: api.get(f"/api/commands/{c['id']}").json()["output"] for c in cmds},
        "audit": api.get("/api/audit").json()["entries"],
    }


def test_a_used_sqlite_fleet_copied_to_postgresql_carries_on_there(make_fleet, pg_cluster):
    rf = make_fleet(hosts=2, build_seconds=0.5)
    bad = httpx.post(f"{rf.base}/login", data={"username": "admin", "password": "wrong"})
    assert bad.status_code == 401  # a stored security event and an audit entry
    api = rf.api()
    for kind in ("switch", "test"):
        api.wait_state(api.command("atlas", kind), {"succeeded", "failed"})
    assert api.post("/api/hosts", {"host_id": "web-01"}).status_code == 201
    before = _snapshot(api)
    assert sum(len(lines) for lines in before["output"].values()) > 5
    assert len(before["audit"]) >= 4
    sqlite_verify = _nixfleet(rf.fleet.env, "admin", "audit", "verify")
    assert sqlite_verify.returncode == 0, sqlite_verify.stderr
    rf.stop()

    pg_url = pg_cluster.url(pg_cluster.create_database(), driver="postgresql")
    copied = _nixfleet({**rf.fleet.env, "NIXFLEET_DB_COPY_TO": pg_url}, "db", "copy")
    assert copied.returncode == 0, copied.stderr
    assert "audit_log:" in copied.stdout and "done" in copied.stdout

    rf.fleet.env["NIXFLEET_DATABASE_URL"] = pg_url
    pg_verify = _nixfleet(rf.fleet.env, "admin", "audit", "verify")
    assert pg_verify.returncode == 0, pg_verify.stderr
    # Same entries, same head hash: the chain was copied, not rebuilt.
    assert pg_verify.stdout == sqlite_verify.stdout
    rf.start_dashboard()
    api = rf.api()
    after = _snapshot(api)
    assert after["hosts"] == before["hosts"]
    assert after["commands"] == before["commands"]
    assert after["output"] == before["output"]
    assert after["audit"][-len(before["audit"]) :] == before["audit"]
    # The agents' tokens were copied: they connect to the PostgreSQL dashboard and work.
    for host in ("atlas", "borealis"):
        rf.start_agent(host)
    api.wait_online(["atlas", "borealis"])
    assert api.wait_state(api.command("borealis", "switch"), {"succeeded"})["state"]
    # New security events get ids after the copied ones: they are stored, not refused.
    failures = api.get("/api/security/summary").json()["failures_24h"]
    assert failures >= 1
    again = httpx.post(f"{rf.base}/login", data={"username": "admin", "password": "wrong"})
    assert again.status_code == 401
    wait_for(
        lambda: api.get("/api/security/summary").json()["failures_24h"] == failures + 1,
        what="the new failure stored on PostgreSQL",
    )


def test_a_copy_into_a_database_that_holds_data_is_refused_and_changes_nothing(
    tmp_path, pg_cluster
):
    env = {
        "NIXFLEET_DEMO": "true",
        "NIXFLEET_DATA_DIR": str(tmp_path),
        "NIXFLEET_AGENT_TOKEN_HASH_SECRET": "s" * 40,
    }
    assert _nixfleet(env, "admin", "host", "add", "web-01").returncode == 0
    pg_url = pg_cluster.url(pg_cluster.create_database())
    first = _nixfleet(env, "db", "copy", "--to", pg_url)
    assert first.returncode == 0, first.stderr
    assert _nixfleet(env, "admin", "host", "add", "web-02").returncode == 0
    second = _nixfleet(env, "db", "copy", "--to", pg_url)
    assert second.returncode == 2
    assert "already holds data" in second.stderr and "Traceback" not in second.stderr
    # The SQLite chain moved on after the copy (web-02): its anchor in DATA_DIR names an
    # entry the copy does not have, so the copy is checked against an anchor of its own.
    pg_env = {
        **env,
        "NIXFLEET_DATABASE_URL": pg_url,
        "NIXFLEET_AUDIT_ANCHOR_FILE": str(tmp_path / "pg-anchor.json"),
    }
    assert "1 entries verified" in _nixfleet(pg_env, "admin", "audit", "verify").stdout


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/db", "not a url", "{same}"],
    ids=["unsupported engine", "no url", "itself"],
)
def test_a_copy_to_an_unusable_target_is_refused_in_words(tmp_path, url):
    env = {"NIXFLEET_DEMO": "true", "NIXFLEET_DATA_DIR": str(tmp_path)}
    same = f"sqlite:///{tmp_path / 'nixfleet.db'}"
    res = _nixfleet(env, "db", "copy", "--to", url.replace("{same}", same))
    assert res.returncode == 2
    assert res.stderr.startswith("db copy: ") and "Traceback" not in res.stderr


async def test_a_row_postgresql_cannot_hold_stops_the_copy_and_leaves_the_target_empty(
    tmp_path, pg_cluster
):
    lite = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    pg = pg_cluster.url(pg_cluster.create_database())
    for url in (lite, pg):
        await asyncio.to_thread(upgrade, url)
    source, target = Database(lite), Database(pg)
    try:
        await hosts.add(source, "atlas", None, 1.0, {})
        # SQLite never enforced the column's length; PostgreSQL does.
        async with source.engine.begin() as conn:
            await conn.execute(hosts_table.update().values(location="x" * 300))
        with pytest.raises(TransferError, match="table hosts"):
            await copy_all(source, target)
        assert await hosts.list_all(target) == []
    finally:
        await source.close()
        await target.close()
