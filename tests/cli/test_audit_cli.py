"""Host changes made with the CLI are audited too, under the Unix user's name."""

from __future__ import annotations

import getpass
import sqlite3

from conftest import run_cli


def test_cli_host_changes_are_chained_into_the_audit_log(tmp_path):
    env = {
        "NIXFLEET_DEMO": "true",
        "NIXFLEET_DATA_DIR": str(tmp_path),
        "NIXFLEET_AGENT_TOKEN_HASH_SECRET": "s" * 40,
    }
    for args in (["add", "web-09"], ["rotate-token", "web-09"], ["remove", "web-09"]):
        res = run_cli(["admin", "host", *args], env)
        assert res.returncode == 0, res.stderr
    res = run_cli(["admin", "audit", "verify"], env)
    assert res.returncode == 0, res.stderr
    assert "3 entries verified" in res.stdout
    with sqlite3.connect(tmp_path / "nixfleet.db") as conn:
        rows = conn.execute("SELECT actor, action, host FROM audit_log ORDER BY seq").fetchall()
    actor = f"cli:{getpass.getuser()}"
    assert rows == [
        (actor, "host_add", "web-09"),
        (actor, "token_rotate", "web-09"),
        (actor, "host_remove", "web-09"),
    ]
