"""A host's default health gate in real Chromium: seen and set on the host page, carried by
the host's next switch, cleared back to the fleet's default; out-of-bounds input is held
back by the form itself."""

from __future__ import annotations

import test_dashboard_ui as ui
from playwright.sync_api import Browser, expect
from screenshots import Look, in_every_look
from test_dashboard_ui import log_in

from conftest import RunningFleet

browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect


def test_a_host_gate_set_on_the_page_is_carried_by_its_next_switch_and_can_be_cleared(fleet, tab):
    rf: RunningFleet = fleet(hosts=2, agents=False)
    page = log_in(tab, rf)
    page.goto(f"{rf.base}/hosts/atlas")
    fact = page.locator('#state-facts [data-fact="Health gate"]')
    expect(fact).to_have_text("none")
    expect(page.locator("#gate-fleet")).to_be_disabled()  # the fleet's default is in force

    page.get_by_label("Deadline, seconds").fill("4000")
    assert not page.locator("#gate-deadline").evaluate("e => e.validity.valid")
    page.get_by_label("Deadline, seconds").fill("45")
    page.get_by_label("The host's tests must pass").check()
    page.get_by_role("button", name="Save gate").click()
    expect(page.locator("#gate-result")).to_have_text(
        "Saved: atlas's switches carry gate 45 s: agent, tests."
    )
    expect(fact).to_have_text("gate 45 s: agent, tests (this host's default)")
    expect(page.locator("#gate-fleet")).to_be_enabled()

    api = rf.api()
    assert api.host("borealis")["deploy"]["gate"] is None  # one host's gate, not the fleet's
    res = api.post("/api/hosts/atlas/command", {"command": "switch"})
    assert res.status_code == 202, res.text
    gate = res.json()["gate"]
    assert (gate["deadline_s"], gate["confirm"]) == (45, True)
    assert [c["kind"] for c in gate["checks"]] == ["tests"]

    page.get_by_role("button", name="Use the fleet's default").click()
    expect(page.locator("#gate-result")).to_have_text(
        "Saved: atlas's switches carry the fleet's default gate."
    )
    expect(fact).to_have_text("none")
    assert api.host("atlas")["deploy"]["gate"] is None
    tab.assert_clean()


def test_screenshots_of_the_host_gate_form(fleet, browser: Browser):
    rf: RunningFleet = fleet(hosts=1, agents=False)
    api = rf.api()
    gate = {"deadline_s": 90, "confirm": True, "checks": [{"kind": "tests"}]}
    res = api.http.put(
        "/api/hosts/atlas/health-gate", json={"gate": gate}, headers={"X-CSRF-Token": api.csrf}
    )
    assert res.status_code == 200, res.text

    def shoot(look: Look) -> None:
        page = look.page
        page.goto(f"{rf.base}/hosts/atlas")
        expect(page.locator("#gate-deadline")).to_have_value("90")
        page.locator("#gate-form").scroll_into_view_if_needed()
        look.take("host-gate", full_page=False)

    in_every_look(browser, rf, shoot)
