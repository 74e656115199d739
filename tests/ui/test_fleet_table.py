"""The fleet table in real Chromium against a real dashboard and real agents: counts that
filter, search, sort, grouping, selection that survives a filter, keyboard navigation,
focus kept across heartbeats, hosts the CLI adds or removes shown live, the phone layout
and dark mode. Every test ends with zero console errors and zero CSP violations."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import test_dashboard_ui as ui
from playwright.sync_api import Browser, Page, expect
from test_dashboard_ui import FINISHED, Tab, assert_not_reloaded, col, log_in, mark_page, row

from conftest import RunningFleet, wait_for

browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect

# Counts the `host` events the page's stream delivers (init scripts run before the page's).
COUNT_HOST_EVENTS = """
window.__hostEvents = {};
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(...args) {
    super(...args);
    this.addEventListener("host", (m) => {
      const id = JSON.parse(m.data).host.id;
      window.__hostEvents[id] = (window.__hostEvents[id] || 0) + 1;
    });
  }
};
"""

ORDER_IS = (
    "(n) => [...document.querySelectorAll('#hosts tr.host')].map(r => r.dataset.host).join() === n"
)


@pytest.fixture(scope="module")
def six(make_module_fleet) -> RunningFleet:
    """Six hosts without agents, for the tests that only look (and are refused).

    Started on a worker thread, as ui.fleet does (Playwright's loop runs on this one).
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(make_module_fleet, hosts=6, agents=False).result()


@pytest.fixture
def phone(browser: Browser) -> Iterator[Tab]:
    t = ui.open_tab(browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        yield t
    finally:
        t.context.close()


def shown_hosts(page: Page) -> list[str]:
    return page.eval_on_selector_all(
        "#hosts tbody tr.host", "rows => rows.map(r => r.dataset.host)"
    )


def deploy_all(rf: RunningFleet, hosts: list[str]) -> None:
    api = rf.api()
    ids = [api.command(h, "switch") for h in hosts]
    for cid in ids:
        api.wait_state(cid, FINISHED, timeout=30)


def test_the_failed_count_filters_to_exactly_the_failed_hosts_and_selection_survives(fleet, tab):
    rf = fleet(hosts=4)  # dune's build is set up to fail
    deploy_all(rf, ["atlas", "borealis", "cirrus", "dune"])
    page = log_in(tab, rf)
    failed = page.locator('[data-filter="failed"]')
    expect(failed.locator(".n")).to_have_text("1")
    expect(page.locator('[data-filter="online"]')).to_have_text("4/4 online")
    expect(col(page, "dune", "deploy").locator(".badge[data-state]")).to_have_text("failed")

    page.check('input[data-select="atlas"]')
    page.check('input[data-select="dune"]')
    failed.click()
    expect(failed).to_have_attribute("aria-pressed", "true")
    page.wait_for_function("() => document.querySelectorAll('#hosts tr.host').length === 1")
    assert shown_hosts(page) == ["dune"]
    # The hidden host stays selected: the count says so, and a bulk action would include it.
    expect(page.locator("#sel-count")).to_have_text("2")
    expect(page.locator("#sel-hidden")).to_have_text(" (1 not shown)")

    failed.click()  # a second click clears the filter
    expect(page.locator("#hosts tr.host")).to_have_count(4)
    expect(page.locator('input[data-select="atlas"]')).to_be_checked()
    expect(page.locator('input[data-select="borealis"]')).not_to_be_checked()
    tab.assert_clean()


def test_search_finds_hosts_by_name_and_location_and_slash_focuses_it(fleet, tab):
    rf = fleet(hosts=4, agents=False)
    page = log_in(tab, rf)
    expect(page.locator("#hosts tr.host")).to_have_count(4)
    page.locator("body").press("/")
    expect(page.locator("#search")).to_be_focused()
    page.keyboard.type("rack")  # atlas is in rack A, cirrus in rack B
    page.wait_for_function("() => document.querySelectorAll('#hosts tr.host').length === 2")
    assert sorted(shown_hosts(page)) == ["atlas", "cirrus"]
    expect(page.locator("#shown")).to_have_text("2 of 4 hosts shown")
    page.fill("#search", "bore")
    page.wait_for_function("() => document.querySelectorAll('#hosts tr.host').length === 1")
    assert shown_hosts(page) == ["borealis"]
    page.fill("#search", "no-such-host")
    expect(page.locator("#no-match")).to_be_visible()
    page.locator("#search").press("Escape")
    expect(page.locator("#hosts tr.host")).to_have_count(4)
    tab.assert_clean()


def test_sorting_by_a_column_and_grouping_by_location(six, tab):
    rf = six
    page = log_in(tab, rf)
    expect(page.locator("#hosts tr.host")).to_have_count(6)
    header = page.locator('#hosts th[data-key="host"]')
    header.locator("button").click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    names = ["atlas", "borealis", "cirrus", "dune", "ember", "fjord"]
    page.wait_for_function(
        ORDER_IS,
        arg=",".join(names),
    )
    header.locator("button").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    page.wait_for_function(
        ORDER_IS,
        arg=",".join(reversed(names)),
    )

    page.select_option("#group-by", "location")
    groups = page.locator("#hosts tr.group")
    expect(groups).to_have_count(6)  # six hosts in six places
    expect(groups.first).to_contain_text("basement")
    expect(groups.first).to_contain_text("1 host")
    tab.assert_clean()


def test_keyboard_focus_stays_on_a_button_across_ten_heartbeats(fleet, tab):
    rf = fleet(hosts=2, env={"NIXFLEET_HEARTBEAT_S": "0.3"})
    tab.context.add_init_script(COUNT_HOST_EVENTS)
    page = log_in(tab, rf)
    button = row(page, "atlas").locator("button.menu-btn")
    button.focus()
    page.evaluate("window.__focused = document.activeElement")
    start = page.evaluate("window.__hostEvents.atlas || 0")
    page.wait_for_function(
        f"() => (window.__hostEvents.atlas || 0) >= {start + 10}", timeout=30_000
    )
    # Ten updates of atlas later, the very same button still has the focus.
    assert page.evaluate(
        "document.activeElement === window.__focused && window.__focused.isConnected"
    )
    page.keyboard.press("Enter")  # and it works: the row menu opens, focus on its first item
    expect(page.locator("#row-menu")).to_be_visible()
    expect(page.locator("#row-menu [role=menuitem]").first).to_be_focused()
    page.keyboard.press("Escape")
    expect(button).to_be_focused()

    # Rows take the focus too: arrows (or j/k) move it, Enter opens the host page.
    first = page.locator("#hosts tr.host").first
    first.focus()
    page.keyboard.press("ArrowDown")
    second = page.locator("#hosts tr.host").nth(1)
    expect(second).to_be_focused()
    page.keyboard.press("k")
    expect(first).to_be_focused()
    host = first.get_attribute("data-host")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{rf.base}/hosts/{host}")
    tab.assert_clean()


def _cli(rf: RunningFleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nixfleet", *args],
        env={**os.environ, **rf.fleet.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_host_added_from_the_cli_appears_in_an_open_page_and_a_removed_one_goes(fleet, tab):
    rf = fleet(hosts=2, agents=False)
    page = log_in(tab, rf)
    expect(page.locator("#hosts tr.host")).to_have_count(2)
    mark_page(page)
    added = _cli(rf, "admin", "host", "add", "web-09")
    assert added.returncode == 0, added.stderr
    expect(row(page, "web-09")).to_be_visible()
    expect(row(page, "web-09")).to_contain_text("not enrolled")
    # Another process deletes a row (as a second dashboard or a script would).
    with sqlite3.connect(rf.fleet.root / "dashboard" / "nixfleet.db") as db:
        db.execute("DELETE FROM hosts WHERE id = 'borealis'")
    expect(row(page, "borealis")).to_have_count(0)
    expect(page.locator('[data-filter="online"]')).to_have_text("0/2 online")
    assert_not_reloaded(page)
    tab.assert_clean()


def test_the_table_fits_a_1280_px_window(six, tab):
    rf = six
    page = log_in(tab, rf)
    expect(page.locator("#hosts tr.host")).to_have_count(6)
    widths: dict[str, Any] = page.evaluate(
        """() => ({ page: document.documentElement.scrollWidth, window: innerWidth,
                   table: document.querySelector('#table-wrap').scrollWidth,
                   box: document.querySelector('#table-wrap').clientWidth })"""
    )
    assert widths["page"] <= widths["window"] == 1280, widths
    assert widths["table"] <= widths["box"], widths
    # Every row's primary action and menu are on screen, not cut off.
    for button in page.locator("#hosts tr.host .c-act button").all():
        box = button.bounding_box()
        assert box and box["x"] + box["width"] <= 1280
    tab.assert_clean()


def test_a_phone_gets_cards_without_horizontal_scrolling(fleet, phone):
    rf = fleet(hosts=3)
    page = log_in(phone, rf)
    expect(page.locator("#hosts tr.host")).to_have_count(3)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    card = row(page, "atlas")
    assert card.evaluate("r => getComputedStyle(r).display") == "grid"
    box = card.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
    expect(page.locator('#hosts thead th[data-key="deploy"]')).to_be_hidden()
    expect(card.locator("button.primary")).to_be_visible()
    # The log opens below, still within the width.
    card.locator('button[data-menu="atlas"]').click()
    page.click('#row-menu [data-action="test"]')
    expect(page.locator("#dock-view .logview")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    phone.assert_clean()


def test_dark_mode_follows_the_system_and_the_toggle_overrides_it(six, browser):
    rf = six
    dark = ui.open_tab(browser, color_scheme="dark")
    try:
        page = log_in(dark, rf)
        background = "() => getComputedStyle(document.body).backgroundColor"
        assert page.evaluate(background) == "rgb(15, 19, 26)"
        toggle = page.locator("#theme-toggle")
        expect(toggle).to_have_attribute("aria-pressed", "true")
        toggle.click()
        assert page.evaluate(background) == "rgb(244, 245, 247)"
        expect(toggle).to_have_attribute("aria-pressed", "false")
        page.reload()  # the choice is kept
        expect(page.locator("#conn")).to_have_text("live")
        assert page.evaluate(background) == "rgb(244, 245, 247)"
        page.locator("#theme-toggle").click()
        assert page.evaluate(background) == "rgb(15, 19, 26)"
        dark.assert_clean()
    finally:
        dark.context.close()


def test_api_errors_read_as_sentences_without_internal_prefixes(six, tab):
    rf = six
    api = rf.api()
    again = api.post("/api/hosts", {"host_id": "atlas"})
    assert again.status_code == 409
    detail = again.json()["detail"]
    assert detail == ("Host 'atlas' already exists; choose another name or remove that host first.")
    stop = api.post("/api/hosts/atlas/command", {"command": "stop"})
    assert stop.status_code == 409
    assert not re.match(r"^[a-z]+: ", stop.json()["detail"]), stop.json()
    # The page shows the same words.
    page = log_in(tab, rf)
    errors_before = len(tab.console_errors)
    page.click("#open-add-host")
    page.fill("#add-host-form input[name=host_id]", "atlas")
    page.click("#add-host-form button[type=submit]")
    expect(page.locator("#add-host-result")).to_have_text(detail)
    tab.forgive_console_errors(
        re.compile(r"status of 409 \(Conflict\) \(\S+/api/hosts\)$"), since=errors_before
    )
    tab.assert_clean()


def test_test_progress_shows_in_the_row_while_the_tests_run(fleet, tab, tmp_path):
    rf = fleet(hosts=1)
    tests_dir = rf.host("atlas").root / "repo" / "hosts" / "atlas" / "tests"
    wait_for(tests_dir.exists, 20, "the agent's checkout")
    gate = tmp_path / "gate"
    # Sorted between T01 and T02: it holds the run until the test opens the gate (20 s at most).
    script = tests_dir / "T015-gate.sh"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f"for i in $(seq 200); do [ -e {gate} ] && exit 0; sleep 0.1; done\nexit 1\n"
    )
    script.chmod(0o755)
    page = log_in(tab, rf)
    menu = page.locator('button[data-menu="atlas"]')
    menu.click()
    page.click('#row-menu [data-action="test"]')
    progress = col(page, "atlas", "activity").locator("[data-test-progress]")
    expect(progress).to_have_text("1 passed, 0 failed")  # T01 is done, the gate holds T015
    expect(col(page, "atlas", "activity").locator(".badge")).to_have_text("test running")
    gate.touch()
    tests = col(page, "atlas", "checks").locator('[data-check="tests"]')
    expect(tests).to_have_text("tests 4/4")
    expect(progress).to_have_count(0)
    tab.assert_clean()
