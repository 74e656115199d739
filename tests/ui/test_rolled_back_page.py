"""A host rolled back by its health gate, in real Chromium: the rollout counts it against
its failure budget and says why in its report, and the host's history shows the badge, the
gate and the reason; no console or CSP errors."""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import test_dashboard_ui as ui
from playwright.sync_api import expect
from test_dashboard_ui import log_in, menu_action

from conftest import RunningFleet

browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect
# Where the screenshots go (docs/deploying.md uses them); the test's own dir otherwise.
SHOTS = os.environ.get("NIXFLEET_SCREENSHOTS", "")


class _Broken(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(502)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_a_rolled_back_canary_stops_the_rollout_and_shows_why(fleet, tab, tmp_path):
    web = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        rf: RunningFleet = fleet(hosts=2, build_seconds=0, failing=())
        api = rf.api()
        url = f"http://127.0.0.1:{web.server_port}/"
        gate = {"deadline_s": 1, "checks": [{"kind": "http", "name": "web", "url": url}]}
        res = api.http.put(
            "/api/hosts/atlas/health-gate", json={"gate": gate}, headers={"X-CSRF-Token": api.csrf}
        )
        assert res.status_code == 200, res.text
        res = api.post("/api/rollouts", {"command": "pull-switch", "host_ids": ["atlas",
                       "borealis"], "policy": {"canary": 1}})  # fmt: skip
        assert res.status_code == 201, res.text
        page = log_in(tab, rf)
        page.goto(f"{rf.base}/rollouts/{res.json()['id']}")
        expect(page.locator("#ro-report")).to_have_text(
            "1 rolled back (health check web: HTTP 502), 1 not started: stopped by the failure "
            "budget",
            timeout=60_000,
        )
        expect(
            page.locator("section.ro-wave").nth(0).locator("tr", has_text="atlas")
        ).to_contain_text("rolled back")
        shots = Path(SHOTS) if SHOTS else tmp_path
        page.set_viewport_size({"width": 1400, "height": 900})
        page.screenshot(path=str(shots / "rollout-rolled-back.png"), full_page=True)

        page.goto(f"{rf.base}/hosts/atlas")
        expect(page.locator('[data-fact="Health gate"]')).to_have_text(
            "gate 1 s: agent, web (this host's default)"
        )
        first = page.locator("#history tbody tr").first
        expect(first.locator(".badge")).to_have_text("rolled back")
        expect(first).to_contain_text("gate 1 s: agent, web")
        expect(first).to_contain_text("health check web: HTTP 502")
        first.click()
        expect(page.locator("#host-log")).to_contain_text(
            "health gate failed: health check web: HTTP 502; rolling back to the previous "
            "generation"
        )
        page.screenshot(path=str(shots / "host-rolled-back.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(shots / "host-rolled-back-phone.png"), full_page=True)

        # From the fleet page: the notice names the gate, then the rollback and its reason.
        page.set_viewport_size({"width": 1400, "height": 900})
        page.goto(f"{rf.base}/")
        expect(page.locator("#conn")).to_have_text("live")
        menu_action(page, "atlas", "switch")
        notice = page.locator("#notice")
        expect(notice).to_contain_text("switch on atlas, gate 1 s: agent, web")
        expect(notice).to_have_text(
            "switch on atlas, gate 1 s: agent, web: rolled back (health check web: HTTP 502)",
            timeout=40_000,
        )
        page.screenshot(path=str(shots / "fleet-rolled-back-notice.png"))
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(shots / "fleet-rolled-back-notice-phone.png"))

        # From the host page: the result line beside the buttons follows the switch to its
        # end too, and the history says the host stayed where it was.
        page.set_viewport_size({"width": 1400, "height": 900})
        page.goto(f"{rf.base}/hosts/atlas")
        expect(page.locator("#conn")).to_have_text("live")
        page.locator('button[data-action="switch"]').click()
        result = page.locator("#action-result")
        expect(result).to_contain_text("switch, gate 1 s: agent, web")
        expect(result).to_have_text(
            "switch, gate 1 s: agent, web: rolled back (health check web: HTTP 502)",
            timeout=40_000,
        )
        expect(page.locator("#history tbody tr").first.locator("td.change")).to_have_text(
            re.compile(r"^stayed on gen \d+")
        )
        tab.assert_clean()
    finally:
        web.shutdown()
        web.server_close()
