"""Security events are stored (time, address, user, outcome) and pruned after retention;
a bad alert rules file stops start-up with a clear message."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import httpx

from conftest import wait_for


def test_refused_logins_and_csrf_failures_are_stored_with_their_details(make_fleet):
    fleet = make_fleet(hosts=1, agents=False)
    httpx.post(f"{fleet.base}/login", data={"username": "mallory", "password": "x"})
    api = fleet.api()
    assert api.http.post("/api/hosts", json={"host_id": "x"}).status_code == 403

    def stored() -> list[dict] | None:
        recent = api.get("/api/security/summary").json()["recent"]
        return recent if len(recent) >= 3 else None

    events = {e["kind"]: e for e in wait_for(stored, what="three stored events")}
    failure = events["auth_failure"]
    # An unknown user name is stored as a keyed hash and its length, never as typed.
    assert failure["user"].startswith("unknown:") and failure["user"].endswith(":7")
    assert (failure["detail"], failure["outcome"]) == ("password", "refused")
    assert failure["address"] == "127.0.0.1"
    assert abs(failure["at"] - time.time()) < 600
    assert events["login"]["outcome"] == "ok"
    assert events["csrf_failure"]["user"] == "admin"
    summary = api.get("/api/security/summary").json()
    assert summary["failures_24h"] == 1
    assert summary["top_addresses"] == [{"address": "127.0.0.1", "count": 2}]


def test_events_older_than_the_retention_are_pruned(make_fleet):
    fleet = make_fleet(hosts=1, agents=False, env={"NIXFLEET_SECURITY_EVENT_RETENTION_DAYS": "1"})
    fleet.kill_dashboard()
    db = fleet.fleet.root / "dashboard" / "nixfleet.db"
    now = time.time()
    with sqlite3.connect(db) as conn:
        for age_days in (3, 0.5):
            conn.execute(
                "INSERT INTO security_events (at, kind, outcome, detail, address, user, host) "
                "VALUES (?, 'auth_failure', 'refused', 'password', '192.0.2.1', 'x', '')",
                (now - age_days * 86400,),
            )
    fleet.start_dashboard()

    def ages() -> list[float]:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT at FROM security_events").fetchall()
        return [round((now - r[0]) / 86400, 1) for r in rows]

    wait_for(lambda: ages() == [0.5], what="the 3-day-old event to be pruned")


def test_a_bad_alert_rules_file_stops_start_up_with_the_reason(tmp_path):
    rules = tmp_path / "alerts.toml"
    rules.write_text('[[rule]]\nname = "x"\nkind = "auth_failure"\nthreshold = 0\n')
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEET_")}
    env = {
        **clean,
        "NIXFLEET_DEMO": "true",
        "NIXFLEET_DATA_DIR": str(tmp_path / "data"),
        "NIXFLEET_ALERT_RULES_FILE": str(rules),
    }
    res = subprocess.run(
        [sys.executable, "-m", "nixfleet", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "NIXFLEET_ALERT_RULES_FILE: alerts: rule 1 (x): threshold:" in res.stderr
    assert "dashboard on" not in res.stderr  # refused before it listens
    assert "Traceback" not in res.stderr
