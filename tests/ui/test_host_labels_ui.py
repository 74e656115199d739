"""Host labels in real Chromium: set on the host page (a bad one refused in words), shown
in the fleet table, found by search and offered as a group-by."""

from __future__ import annotations

import re

import test_dashboard_ui as ui
from playwright.sync_api import Browser, Page, expect
from screenshots import Look, in_every_look
from test_dashboard_ui import log_in, row

from conftest import RunningFleet

browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect


def label_on_host_page(page: Page, rf: RunningFleet, host_id: str, text: str) -> None:
    page.goto(f"{rf.base}/hosts/{host_id}")
    page.fill("#labels-input", text)
    page.click("#labels-form button[type=submit]")


def test_labels_set_on_the_host_page_show_filter_and_group_the_fleet(fleet, tab):
    rf = fleet(hosts=3, agents=False)
    page = log_in(tab, rf)
    label_on_host_page(page, rf, "atlas", "Role=web")
    expect(page.locator("#labels-result")).to_have_text(
        "'Role' is not a label key: use 1 to 32 lower-case letters, digits, '.', '-' or '_', "
        "starting and ending with a letter or digit."
    )
    tab.forgive_console_errors(re.compile(r"status of 422"))
    page.fill("#labels-input", "role=web site=ams1")
    page.click("#labels-form button[type=submit]")
    expect(page.locator("#labels-result")).to_have_text("Saved 2 labels.")
    expect(page.locator('#meta-facts [data-fact="label role"]')).to_have_text("webfrom dashboard")
    label_on_host_page(page, rf, "borealis", "role=db site=ams1")
    expect(page.locator("#labels-result")).to_have_text("Saved 2 labels.")

    page.goto(rf.base)
    expect(row(page, "atlas").locator(".labels")).to_have_text("role=web site=ams1")
    expect(row(page, "cirrus").locator(".labels")).to_be_hidden()
    page.fill("#search", "role=web")
    page.wait_for_function("() => document.querySelectorAll('#hosts tr.host').length === 1")
    expect(page.locator("#hosts tr.host")).to_have_attribute("data-host", "atlas")
    page.fill("#search", "")
    page.select_option("#group-by", "label:role")
    groups = page.locator("#hosts tr.group .g-name")
    expect(groups).to_have_text(["db", "no role", "web"])
    page.select_option("#group-by", "label:site")
    expect(groups).to_have_text(["ams1", "no site"])
    tab.assert_clean()


def test_screenshots_of_labels_on_the_fleet_table_and_the_host_page(fleet, browser: Browser):
    rf = fleet(hosts=4, agents=False)
    api = rf.api()
    for host_id, labels in {"atlas": "role=web site=ams1 tier=1", "dune": "role=db"}.items():
        pairs = dict(w.split("=") for w in labels.split())
        res = api.http.put(
            f"/api/hosts/{host_id}/labels",
            json={"labels": pairs},
            headers={"X-CSRF-Token": api.csrf},
        )
        assert res.status_code == 200, res.text

    def shoot(look: Look) -> None:
        page = look.page
        page.select_option("#group-by", "label:role")
        expect(page.locator("#hosts tr.group").first).to_be_visible()
        look.take("labels-fleet", full_page=False)
        page.goto(f"{rf.base}/hosts/atlas")
        expect(page.locator('#meta-facts [data-fact="label tier"]')).to_be_visible()
        look.take("labels-host")

    in_every_look(browser, rf, shoot)
