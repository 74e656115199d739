"""The security panel in real Chromium: the chart, offenders, events, alerts and channel
health, updated live; zero CSP violations. Set NIXFLEET_DOCS_SCREENSHOTS=1 to also save
docs/security-panel.png (with a day of seeded history, so the chart has a shape)."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import test_dashboard_ui as ui
from playwright.sync_api import expect
from test_dashboard_ui import assert_not_reloaded, log_in, mark_page

from conftest import wait_for

# The browser fixtures of the dashboard UI tests, found by pytest under these names.
browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect

# Counts the EventSources a document opens (init scripts run before the page's own).
COUNT_STREAMS = """
window.__streams = 0;
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(...args) { super(...args); window.__streams += 1; }
};
"""
DOCS = Path(__file__).resolve().parents[2] / "docs"


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def bad_logins(base: str, n: int, user: str = "admin") -> None:
    for _ in range(n):
        res = httpx.post(f"{base}/login", data={"username": user, "password": "guess"})
        assert res.status_code == 401


def seed_history(db: Path) -> None:
    """Add a day of earlier failures from a few addresses (for the screenshot only)."""
    rng = random.Random(7)
    now = time.time()
    rows = []
    for hour in range(1, 24):
        for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 13]) if hour != 6 else 40):
            addr = rng.choice(["203.0.113.9", "198.51.100.23", "192.0.2.44", "203.0.113.10"])
            at = now - hour * 3600 + rng.uniform(-1500, 1500)
            rows.append((at, "auth_failure", "refused", "password", addr, "root", ""))
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO security_events (at, kind, outcome, detail, address, user, host) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def test_the_security_panel_shows_the_trend_and_updates_live(fleet, tab, tmp_path):
    ok_hook = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=ok_hook.serve_forever, daemon=True).start()
    rules = tmp_path / "alerts.toml"
    rules.write_text(
        '[[rule]]\nname = "login_failures"\nkind = "auth_failure"\ndetails = ["password"]\n'
        'threshold = 6\nwindow_s = 600\ncooldown_s = 3600\nsummary = "Many failed logins"\n'
    )
    try:
        rf = fleet(
            hosts=1,
            agents=False,
            env={
                "NIXFLEET_ALERT_RULES_FILE": str(rules),
                "NIXFLEET_ALERT_URLS": (
                    f"json://127.0.0.1:{ok_hook.server_address[1]}/hook "
                    "json://127.0.0.1:9/unreachable"
                ),
                "NIXFLEET_ALERT_ALLOW_PRIVATE": "true",
                "NIXFLEET_ALERT_RETRIES": "0",
            },
        )
        if os.environ.get("NIXFLEET_DOCS_SCREENSHOTS"):
            seed_history(rf.fleet.root / "dashboard" / "nixfleet.db")
        bad_logins(rf.base, 4)
        page = log_in(tab, rf)
        page.click("#security-link")
        page.wait_for_url(f"{rf.base}/security")
        expect(page.locator("#conn")).to_have_text("live")

        chart = page.locator("svg#failures-chart")
        expect(chart.locator("rect.bar")).to_have_count(24)
        counts = [int(c) for c in chart.locator("rect.bar").evaluate_all(
            "bars => bars.map(b => b.dataset.count)")]  # fmt: skip
        total = int(page.locator("#failures-24h").text_content() or "0")
        assert sum(counts) == total >= 4
        expect(page.locator("#top-addresses")).to_contain_text("127.0.0.1")
        expect(page.locator("#recent-events")).to_contain_text("auth_failure")
        expect(page.locator("#recent-events")).to_contain_text("login")
        expect(page.locator('#alert-rules tr[data-rule="login_failures"]')).to_contain_text("ok")
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 60

        mark_page(page)
        bad_logins(rf.base, 3, user="root")  # 7 in the window: the rule fires
        expect(page.locator("#failures-24h")).to_have_text(str(total + 3))
        rule_row = page.locator('#alert-rules tr[data-rule="login_failures"]')
        expect(rule_row).to_contain_text("firing")
        expect(page.locator("#channels li")).to_have_count(2)
        expect(page.locator("#channels")).to_contain_text("1 sent, 0 failed")
        expect(page.locator("#channels")).to_contain_text("0 sent, 1 failed")
        assert_not_reloaded(page)

        if os.environ.get("NIXFLEET_DOCS_SCREENSHOTS"):
            page.set_viewport_size({"width": 1280, "height": 900})
            page.screenshot(path=str(DOCS / "security-panel.png"), full_page=True)
        tab.assert_clean()
    finally:
        ok_hook.shutdown()
        ok_hook.server_close()


def test_the_security_panel_needs_a_session(fleet):
    rf = fleet(hosts=1, agents=False)
    res = httpx.get(f"{rf.base}/security")
    assert res.status_code == 303 and res.headers["location"] == "/login"
    assert httpx.get(f"{rf.base}/security/panel").status_code == 401
    assert httpx.get(f"{rf.base}/api/security/summary").status_code == 401
    assert wait_for(lambda: httpx.get(f"{rf.base}/audit").status_code == 303)


def test_security_events_do_not_break_the_fleet_pages_live_stream(fleet, tab):
    rf = fleet(hosts=1, agents=False)
    tab.context.add_init_script(COUNT_STREAMS)
    page = log_in(tab, rf)
    mark_page(page)
    bad_logins(rf.base, 3)
    api = rf.api()  # a login: another security event
    assert api.post("/api/hosts", {"host_id": "web-07"}).status_code == 201
    expect(page.locator('#hosts tr[data-host="web-07"]')).to_be_visible()
    # The `security` events in between kept the sequence whole: still the first stream.
    assert page.evaluate("window.__streams") == 1
    assert_not_reloaded(page)
    tab.assert_clean()


def test_the_security_and_audit_pages_fit_a_phone(fleet, tab, tmp_path):
    # Long audit details (a gated switch's) and the six-column event table once made
    # these pages 750 px wide at 390: the page must not scroll sideways, a table may.
    rf = fleet(hosts=1, agents=False)
    bad_logins(rf.base, 2)
    api = rf.api()
    labels = {f"key{i}": "v" * 40 for i in range(8)}  # a long audit detail
    res = api.http.put(
        "/api/hosts/atlas/labels", json={"labels": labels}, headers={"X-CSRF-Token": api.csrf}
    )
    assert res.status_code == 200, res.text
    page = log_in(tab, rf)
    page.set_viewport_size({"width": 390, "height": 844})
    for path, table in (("/security", "#recent-events"), ("/audit", "#audit")):
        page.goto(f"{rf.base}{path}")
        expect(page.locator(table)).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        # The table is still whole: its box scrolls instead of the page.
        assert page.locator(table).evaluate("t => t.getBoundingClientRect().width > 0")
        page.screenshot(path=str(tmp_path / f"{path.strip('/')}-phone.png"), full_page=True)
    expect(page.locator("#audit")).to_contain_text("key7")
    tab.assert_clean()
