"""The host page in real Chromium over real Nix: "Roll back to this" on a generation asks
first and lands the host on it, the history shows each command's from → to, and the state
history shows the host going offline and back and its deploy state moving."""

from __future__ import annotations

import os
import re

import test_dashboard_ui as ui
from playwright.sync_api import Browser, Dialog, expect
from screenshots import Look, in_every_look
from test_dashboard_ui import FINISHED, log_in

from conftest import RunningFleet, wait_for
from nixfleet.demo.configrepo import commit_change

browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect


def deploy(rf: RunningFleet, message: str, generation: int) -> str:
    api = rf.api()
    commit_change(rf.fleet.root / "config", message)
    cmd = api.wait_state(api.command("atlas", "pull-switch"), FINISHED, 120)
    assert cmd["state"] == "succeeded", cmd["detail"]
    wait_for(lambda: api.host("atlas")["status"]["generation"] == generation, 30, "generation")

    # The state history follows the views the dashboard announces: "current" arrives with
    # the first one after the new generation is reported, which may be a heartbeat later.
    def newest_deploy_state() -> str:
        rows = api.get("/api/hosts/atlas/states?limit=20").json()["states"]
        return next((r["value"] for r in rows if r["field"] == "deploy"), "")

    wait_for(lambda: newest_deploy_state() == "current", 30, "the history to say current")
    return str(api.host("atlas")["deploy"]["deployed_commit"])


def test_rolling_back_to_a_chosen_generation_from_the_host_page(fleet, tab, browser: Browser):
    rf = fleet(hosts=1, build_seconds=0.2, failing=())
    two = deploy(rf, "second", 2)
    three = deploy(rf, "third", 3)
    page = log_in(tab, rf)
    page.goto(f"{rf.base}/hosts/atlas")
    gens = page.locator("#generations tbody tr")
    expect(gens).to_have_count(3)
    expect(gens.nth(0).locator("button")).to_have_count(0)  # the running one has none
    history = page.locator("#history tbody tr[data-show]")
    expect(history.nth(0).locator("td.change")).to_have_text(
        f"gen 2 ({two[:7]}) → gen 3 ({three[:7]})"
    )

    # Dismissed: nothing happens. Accepted: the rollback runs and lands on generation 2.
    asked: list[str] = []

    def answer(accept: bool):
        def on_dialog(d: Dialog) -> None:
            asked.append(d.message)
            d.accept() if accept else d.dismiss()

        return on_dialog

    page.once("dialog", answer(False))
    page.click('[data-rollback-to="2"]')
    wait_for(lambda: asked, 10, "the confirmation")
    assert asked[0] == (
        f"Roll atlas back to generation 2 ({two[:7]}), from generation 3? It is activated at once."
    )
    expect(history).to_have_count(2)
    page.once("dialog", answer(True))
    page.click('[data-rollback-to="2"]')
    expect(history).to_have_count(3)
    newest = history.nth(0)
    expect(newest.locator("td").nth(1)).to_have_text("rollback to gen 2")
    expect(newest.locator("td").nth(2)).to_have_text("succeeded", timeout=60_000)
    expect(newest.locator("td.change")).to_have_text(f"gen 3 ({three[:7]}) → gen 2 ({two[:7]})")
    expect(gens.nth(1).locator("td").nth(0)).to_have_text("2 (running)")
    assert os.readlink(rf.host("atlas").profile) == "system-2-link"
    # Rolled back to an older commit, the host is behind its target: the timeline says so.
    states = page.locator("#states li")
    expect(states.first).to_contain_text("deploy")
    expect(states.first.locator(".badge")).to_have_text("behind")

    rf.kill_agent("atlas")
    expect(states.first.locator(".badge")).to_have_text("offline", timeout=30_000)
    rf.start_agent("atlas")
    expect(states.first.locator(".badge")).to_have_text("online", timeout=30_000)
    texts = [t.strip() for t in page.locator("#states li .badge").all_inner_texts()]
    assert texts[:3] == ["online", "offline", "behind"], texts
    assert "current" in texts
    tab.assert_clean()

    def shoot(look: Look) -> None:
        look.page.goto(f"{rf.base}/hosts/atlas")
        expect(look.page.locator("#history td.change").first).to_have_text(re.compile(r"^gen \d+"))
        expect(look.page.locator("#states li").first).to_be_visible()
        # Nothing is cut off at the card's edge: no "Roll back to th…", no hidden column.
        cut = look.page.evaluate(
            "[...document.querySelectorAll('main .card')]"
            ".filter((c) => c.scrollWidth > c.clientWidth + 1).map((c) => c.id || c.className)"
        )
        assert cut == [], f"cards wider than their box at {look.width} px: {cut}"
        look.take("generations-host")

    in_every_look(browser, rf, shoot)
