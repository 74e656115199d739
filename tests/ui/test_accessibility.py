"""Accessibility, checked by axe-core (from npm, tests/ui/js) in real Chromium: the fleet
page with a log open, the host page and the login page, in the light and the dark theme,
on a desktop and a phone. No serious or critical violation is allowed; nor is a live
region around the table or the log (only summaries are announced)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_dashboard_ui as ui
from playwright.sync_api import Page, expect
from test_dashboard_ui import FINISHED, Tab, col, log_in

browser, fleet, _bounded_expect = ui.browser, ui.fleet, ui._bounded_expect
AXE = Path(__file__).parent / "js" / "node_modules" / "axe-core" / "axe.min.js"


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Return the serious and critical violations axe-core finds on the page as it is."""
    assert AXE.exists(), "axe-core is missing: run scripts/bootstrap --test"
    # Evaluated through the DevTools protocol, so the page's CSP stays as strict as ever.
    page.evaluate(AXE.read_text())
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, { resultTypes: ["violations"] });
            return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(" ")} :: ${n.failureSummary}`),
            }));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


@pytest.fixture(params=["light", "dark"])
def themed(request: pytest.FixtureRequest, browser: Any) -> Iterator[Tab]:
    t = ui.open_tab(browser, color_scheme=request.param, viewport={"width": 1400, "height": 900})
    try:
        yield t
    finally:
        t.context.close()


def test_axe_finds_no_serious_violation_on_any_page_in_either_theme(fleet, themed):
    rf = fleet(hosts=4)
    api = rf.api()
    cid = api.command("dune", "switch")  # dune's build fails: a failed row and an error log
    api.wait_state(cid, FINISHED, timeout=30)
    page = log_in(themed, rf)
    expect(col(page, "dune", "deploy").locator(".badge[data-state]")).to_have_text("failed")
    col(page, "dune", "activity").locator(f'[data-open-log="{cid}"]').click()
    expect(page.locator("#output-meta")).to_have_attribute("data-state", "failed")
    page.click('#dock-view [data-log-toggle="stream"]')
    page.fill('#dock-view [data-log="search"]', "error")
    expect(page.locator("#dock-view mark.hit").first).to_be_visible()
    assert (found := axe_violations(page)) == [], found

    page.click('button[data-menu="atlas"]')  # the open row menu too
    expect(page.locator("#row-menu")).to_be_visible()
    assert (found := axe_violations(page)) == [], found
    page.keyboard.press("Escape")

    page.click("#open-add-host")
    assert (found := axe_violations(page)) == [], found
    page.click("#close-add-host")

    # Live regions: summaries only, never the table or a log.
    live = page.eval_on_selector_all(
        "[aria-live], [role=log], [role=status], [role=alert]",
        "ns => ns.map(n => n.id || n.className)",
    )
    assert sorted(live) == ["add-host-result", "notice", "output-meta", "summary"], live
    assert page.locator("#hosts [aria-live], #dock-view [aria-live]").count() == 0

    page.goto(f"{rf.base}/hosts/dune")
    expect(page.locator("#history tbody tr[data-show]").first).to_be_visible()
    expect(page.locator("#output-meta")).to_have_attribute("data-state", "failed")
    assert (found := axe_violations(page)) == [], found

    # Leave the page first: its live requests, refused once the cookie is gone, send it to
    # the login page by themselves, and that navigation would race this one.
    page.goto("about:blank")
    themed.context.clear_cookies()
    page.goto(f"{rf.base}/login")
    assert (found := axe_violations(page)) == [], found
    themed.assert_clean()


def test_axe_finds_no_serious_violation_on_a_phone(fleet, browser):
    rf = fleet(hosts=3, agents=False)
    phone = ui.open_tab(browser, viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = log_in(phone, rf)
        expect(page.locator("#hosts tr.host")).to_have_count(3)
        assert (found := axe_violations(page)) == [], found
        phone.assert_clean()
    finally:
        phone.context.close()
