"""The rollout pages in real Chromium: the waves with each host's outcome, live, the
actions that fit the state, the list, and the phone layout; no console or CSP errors."""

from __future__ import annotations

import os
from pathlib import Path

import test_dashboard_ui as ui
from playwright.sync_api import expect
from test_dashboard_ui import log_in

from conftest import RunningFleet, wait_for

browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect
# Where the screenshots go (docs/deploying.md uses them); the test's own dir otherwise.
SHOTS = os.environ.get("NIXFLEET_SCREENSHOTS", "")


def test_a_stopped_rollout_shows_each_wave_and_host_and_its_report(fleet, tab, tmp_path):
    rf: RunningFleet = fleet(hosts=4, build_seconds=0.5)  # dune's build is set up to fail
    api = rf.api()
    res = api.post("/api/rollouts", {"command": "switch", "host_ids": ["atlas", "borealis",
                   "cirrus", "dune"], "policy": {"canary": 1, "wave_size": 2}})  # fmt: skip
    assert res.status_code == 201, res.text
    rid = res.json()["id"]
    page = log_in(tab, rf)
    page.goto(f"{rf.base}/rollouts/{rid}")
    expect(page.locator("#conn")).to_have_text("live")
    # borealis and cirrus pass; dune fails in the last wave, live on the page.
    expect(page.locator("#ro-report")).to_have_text(
        "3 succeeded, 1 failed (exit 1): stopped by the failure budget", timeout=40_000
    )
    expect(page.locator("#ro-state")).to_contain_text("stopped")
    waves = page.locator("section.ro-wave")
    expect(waves).to_have_count(3)
    expect(waves.nth(0)).to_contain_text("Wave 1 (canary)")
    expect(waves.nth(2).locator("tr", has_text="dune")).to_contain_text("failed")
    for action in ("pause", "resume", "abort"):
        expect(page.locator(f'[data-ro-action="{action}"]')).to_be_disabled()
    shots = Path(SHOTS) if SHOTS else tmp_path
    page.set_viewport_size({"width": 1400, "height": 900})
    page.screenshot(path=str(shots / "rollout-page.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(shots / "rollout-page-phone.png"), full_page=True)

    page.goto(f"{rf.base}/rollouts")
    row = page.locator("#ro-list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("switch · 4 hosts")
    row.locator("a").click()
    wait_for(lambda: page.url.endswith(rid), 10, "the rollout page to open")
    tab.assert_clean()


def test_the_confirmation_states_the_plan_and_cancel_starts_nothing(fleet, tab, tmp_path):
    rf: RunningFleet = fleet(hosts=3)
    page = log_in(tab, rf)
    for host in ("atlas", "borealis", "cirrus"):
        page.check(f'input[data-select="{host}"]')
    page.click('button[data-bulk="switch"]')
    plan = page.locator("#rollout-plan")
    expect(plan).to_contain_text("Switch on 3 hosts in 2 waves")
    page.fill('#rollout-form input[name="wave_size"]', "1")
    page.fill('#rollout-form input[name="pause_s"]', "30")
    expect(plan).to_contain_text("Switch on 3 hosts in 3 waves: first atlas, then waves of 1.")
    expect(plan).to_contain_text("It waits 30 s after each wave that passed.")
    shots = Path(SHOTS) if SHOTS else tmp_path
    page.screenshot(path=str(shots / "rollout-confirm.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(shots / "rollout-confirm-phone.png"))
    page.locator("#rollout-confirm button[value=cancel]").click()
    expect(page.locator("#rollout-confirm")).to_be_hidden()
    assert rf.api().get("/api/rollouts").json()["rollouts"] == []
    tab.assert_clean()
