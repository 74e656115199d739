"""The host page (/hosts/<id>) in real Chromium: state, metadata with where each value came
from, a day of load and memory, every command with date, duration, actor and outcome,
focusable history rows that open the output, and a page for a host that does not exist."""

from __future__ import annotations

import datetime
import re

import httpx
import test_dashboard_ui as ui
from playwright.sync_api import expect
from test_dashboard_ui import FINISHED, log_in

from conftest import wait_for

browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect


def test_the_host_page_shows_state_metadata_history_and_load(fleet, tab):
    rf = fleet(hosts=2, env={"NIXFLEET_HEARTBEAT_S": "0.5"})
    api = rf.api()
    first = api.command("atlas", "switch")
    api.wait_state(first, FINISHED, timeout=30)
    second = api.command("atlas", "test")
    api.wait_state(second, FINISHED, timeout=30)
    wait_for(lambda: api.get("/api/hosts/atlas/samples").json()["samples"], 20, "a load sample")

    page = log_in(tab, rf)
    page.goto(f"{rf.base}/hosts/atlas")
    expect(page.locator("#host-status")).to_have_text("online")
    facts = page.locator("#state-facts")
    expect(facts.locator('[data-fact="Generation"]')).to_have_text("2")
    gens = page.locator("#generations tbody tr")
    expect(gens).to_have_count(2)
    expect(gens.nth(0).locator("td").nth(0)).to_have_text("2 (running)")
    expect(gens.nth(1).locator("td").nth(0)).to_have_text("1")
    expect(gens.nth(0).locator("td").nth(2)).to_have_text(re.compile(r"^[0-9a-f]{7}$"))
    expect(facts.locator('[data-fact="Last test"]')).to_contain_text("passed")
    # The demo's metadata was typed into the dashboard; the host's agent sets none.
    location = page.locator('#meta-facts [data-fact="Location"]')
    expect(location).to_have_text("rack Afrom dashboard")
    expect(page.locator('[data-chart="Load"] h3')).to_have_text(
        re.compile(r"^Load: \d+\.\d\d, peak")
    )

    rows = page.locator("#history tbody tr[data-show]")
    expect(rows).to_have_count(2)
    newest, oldest = rows.nth(0), rows.nth(1)
    expect(newest).to_have_attribute("data-show", second)
    year = str(datetime.date.today().year)
    cells = oldest.locator("td")
    expect(cells.nth(0)).to_contain_text(year)  # a date, not only a time of day
    expect(cells.nth(1)).to_have_text("switch")
    expect(cells.nth(2)).to_have_text("succeeded")
    expect(cells.nth(3)).to_have_text(re.compile(r"^\d+(\.\d)? s$"))
    expect(cells.nth(4)).to_have_text("admin")
    expect(newest.locator("td").nth(6)).to_contain_text("tests passed")

    # The newest command's output shows; a history row takes the focus and Enter opens it.
    expect(page.locator("#output-title")).to_contain_text("test on atlas")
    oldest.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#output-title")).to_contain_text("switch on atlas")
    expect(page.locator("#host-log .logview")).to_contain_text("activating the configuration")
    expect(oldest).to_be_focused()
    tab.assert_clean()


def test_an_unknown_host_gets_a_page_that_says_so_and_samples_need_a_session(fleet, tab):
    rf = fleet(hosts=1, agents=False)
    page = log_in(tab, rf)
    with page.expect_response(f"{rf.base}/hosts/no-such-host") as answer:
        page.goto(f"{rf.base}/hosts/no-such-host")
    assert answer.value.status == 404
    expect(page.locator("main h2")).to_have_text("No host “no-such-host”")
    tab.forgive_console_errors(re.compile(r"status of 404 \(Not Found\)"))
    assert httpx.get(f"{rf.base}/api/hosts/atlas/samples").status_code == 401
    assert httpx.get(f"{rf.base}/hosts/atlas", follow_redirects=False).status_code == 303
    tab.assert_clean()
