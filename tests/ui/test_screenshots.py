"""The README's pictures, taken from a real fleet in real Chromium so they stay true: the
fleet table with a failed deploy, deploys and a test running and a log open; the log
viewer on that failure; the host page; a phone. Each page must be clean (no console error,
no CSP violation). With NIXFLEET_DOCS_SCREENSHOTS=1 the pictures are written to docs/."""

from __future__ import annotations

import os
from pathlib import Path

import test_dashboard_ui as ui
from playwright.sync_api import Page, expect
from test_dashboard_ui import FINISHED, col, log_in

browser, fleet, _bounded_expect = ui.browser, ui.fleet, ui._bounded_expect
DOCS = Path(__file__).resolve().parents[2] / "docs"


def save(page: Page, name: str, tmp_path: Path) -> None:
    target = DOCS if os.environ.get("NIXFLEET_DOCS_SCREENSHOTS") else tmp_path
    page.screenshot(path=str(target / name))


def test_screenshots_of_the_fleet_table_the_log_viewer_and_the_host_page(fleet, browser, tmp_path):
    rf = fleet(hosts=8, build_seconds=8)
    api = rf.api()
    done = [api.command(h, "switch") for h in ("dune", "cirrus", "ember", "node-07")]
    for cid in done:
        api.wait_state(cid, FINISHED, timeout=40)
    failed = done[0]
    api.command("fjord", "test")
    desk = ui.open_tab(browser, viewport={"width": 1400, "height": 900}, color_scheme="light")
    try:
        page = log_in(desk, rf)
        expect(col(page, "dune", "deploy").locator(".badge[data-state]")).to_have_text("failed")
        col(page, "dune", "activity").locator(f'[data-open-log="{failed}"]').click()
        expect(page.locator("#output-meta")).to_have_attribute("data-state", "failed")
        page.click('button[data-action="pull-switch"][data-host="atlas"]')
        expect(col(page, "atlas", "activity")).to_contain_text("running")
        page.check('input[data-select="borealis"]')
        page.check('input[data-select="node-08"]')
        page.locator('#dock-tabs [role="tab"]').first.click()  # back to dune's failure
        page.click('#dock-view [data-log="first-error"]')
        page.mouse.move(0, 0)
        save(page, "fleet-table.png", tmp_path)

        page.locator("#theme-toggle").click()
        page.click('#dock-view [data-log-toggle="stream"]')
        page.fill('#dock-view [data-log="search"]', "dune")
        expect(page.locator('#dock-view [data-log="hits"]')).to_contain_text("of")
        page.click('#dock-view [data-log="fullscreen"]')
        page.click('#dock-view [data-log="first-error"]')
        save(page, "log-viewer.png", tmp_path)
        page.keyboard.press("Escape")

        page.goto(f"{rf.base}/hosts/dune")
        expect(page.locator("#output-meta")).to_have_attribute("data-state", "failed")
        save(page, "host-page.png", tmp_path)
        desk.assert_clean()
    finally:
        desk.context.close()

    phone = ui.open_tab(browser, viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = log_in(phone, rf)
        expect(page.locator("#hosts tr.host").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        save(page, "fleet-phone.png", tmp_path)
        phone.assert_clean()
    finally:
        phone.context.close()
