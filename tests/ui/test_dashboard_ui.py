"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

Every test runs against a real dashboard process and real agents (see tests/conftest.py).
Each page records console errors, uncaught page errors and CSP violations, and each test
ends by asserting that there were none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyotp
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from conftest import RunningFleet, wait_for
from tlsservers import TLSProxy, pin_of, pinned_agent_args, server_context

CHROMIUM = "/usr/bin/chromium"
# No internet here: these stop Chromium phoning home (and waiting for it).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 25_000  # every single wait in these tests is bounded by this
FINISHED = {"succeeded", "failed", "cancelled", "timed_out", "lost"}

# Runs before any page script (init scripts are not subject to the page's CSP). It keeps
# the violations of the current document in window.__csp, and also reports them to the
# test through a binding, so violations on a page we navigated away from are not lost.
CSP_RECORDER = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const v = { directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample,
              source: e.sourceFile, line: e.lineNumber, page: location.href };
  window.__csp.push(v);
  if (typeof window.__reportCsp === "function") window.__reportCsp(v);
});
"""


@dataclass
class Tab:
    """One browser page plus everything that went wrong in it."""

    context: BrowserContext
    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_reported: list[Any] = field(default_factory=list)

    def forgive_console_errors(self, pattern: re.Pattern[str], since: int = 0) -> None:
        """Drop expected console errors matching pattern, from index since on."""
        kept = [e for e in self.console_errors[since:] if not pattern.search(e)]
        self.console_errors[since:] = kept

    def assert_clean(self) -> None:
        csp_here = self.page.evaluate("window.__csp || []")
        assert self.console_errors == [], f"console errors: {self.console_errors}"
        assert self.page_errors == [], f"page errors: {self.page_errors}"
        assert csp_here == [], f"CSP violations on this page: {csp_here}"
        assert self.csp_reported == [], f"CSP violations: {self.csp_reported}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        yield chromium
        chromium.close()


def open_tab(browser: Browser, **context_options: Any) -> Tab:
    """Return a new page in its own context that records console errors and CSP violations."""
    context = browser.new_context(**context_options)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    tab = Tab(context, page)
    context.expose_function("__reportCsp", lambda violation: tab.csp_reported.append(violation))
    context.add_init_script(CSP_RECORDER)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            tab.console_errors.append(f"{msg.text} ({msg.location.get('url')})")

    def on_page_error(err: Error) -> None:
        tab.page_errors.append(f"{err.name}: {err.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return tab


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    tab = open_tab(browser)
    try:
        yield tab
    finally:
        tab.context.close()


@pytest.fixture(autouse=True)
def _bounded_expect() -> None:
    expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture
def fleet(make_fleet: Callable[..., RunningFleet]) -> Callable[..., RunningFleet]:
    """make_fleet, called on a worker thread.

    Playwright's sync API keeps an asyncio loop running on this thread, and preparing a
    fleet calls asyncio.run(), which refuses to run inside a running loop.
    """

    def start(**kwargs: Any) -> RunningFleet:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(make_fleet, **kwargs).result()

    return start


def log_in(tab: Tab, rf: RunningFleet) -> Page:
    """Log in through the form and return the page, showing the live dashboard."""
    page = tab.page
    page.goto(f"{rf.base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", rf.fleet.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{rf.base}/")
    expect(page.locator("#conn")).to_have_text("live")
    return page


def row(page: Page, host_id: str) -> Locator:
    return page.locator(f'#hosts tr[data-host="{host_id}"]')


def col(page: Page, host_id: str, name: str) -> Locator:
    """Return a cell of the host's row by column: status, deploy, generation, checks, cpu,
    ram, activity."""
    return row(page, host_id).locator(f'[data-col="{name}"]')


def status(page: Page, host_id: str) -> Locator:
    """Return the word "online" or "offline" in the host's row."""
    return col(page, host_id, "status").locator(".word")


def menu_action(page: Page, host_id: str, kind: str) -> None:
    """Run a command from the host's row menu."""
    page.click(f'button[data-menu="{host_id}"]')
    page.click(f'#row-menu [data-action="{kind}"]')


def visible_log_text(page: Page) -> str:
    return "\n".join(page.locator("#dock-view .ln-row .txt").all_text_contents())


def mark_page(page: Page) -> None:
    """Leave a mark in the document: if it is still there later, the page never reloaded."""
    page.evaluate("window.__noReload = 'still here'")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__noReload") == "still here", "the page was reloaded"


def output_text(lines: list[dict[str, Any]]) -> str:
    return "".join(line["text"] + "\n" for line in lines)


def test_logging_in_and_clicking_switch_shows_the_build_output_live(fleet, tab):
    rf = fleet(hosts=2, build_seconds=4)
    page = log_in(tab, rf)
    expect(status(page, "atlas")).to_have_text("online")
    expect(col(page, "atlas", "generation")).to_have_text("1")

    menu_action(page, "atlas", "switch")

    # Read the command state in the very same JS turn as the first build line shows up:
    # the output must be there while the command is still running, not only at the end.
    state_when_output_appeared = page.wait_for_function(
        """() => {
            const out = document.querySelector("#dock-view").textContent;
            if (!out.includes("building the system configuration")) return false;
            return document.querySelector("#output-meta").dataset.state || "(none)";
        }""",
        polling="raf",
    ).json_value()
    assert state_when_output_appeared in {"dispatched", "running"}
    expect(page.locator("#output-title")).to_have_text("switch on atlas")

    expect(page.locator("#output-meta")).to_have_attribute("data-state", "succeeded")
    expect(page.locator("#dock-view")).to_contain_text("activating the configuration")
    expect(page.locator("#output-meta")).to_have_text(
        re.compile(r"^succeeded · exit 0 · [\d.]+ s · gen \d+ → gen \d+ \([0-9a-f]{7}\)$")
    )
    # The notice that said "queued" follows the command to its end.
    expect(page.locator("#notice")).to_have_text("switch on atlas: succeeded")

    # Every stored line is in the viewer, once and in order (full screen, the log is short
    # enough to be drawn whole), and the download gives the same text.
    page.click('#dock-view [data-log="fullscreen"]')
    expect(page.locator("#dock-view .logview")).to_have_class(re.compile(r"\bfull\b"))
    api = rf.api()
    cid = api.get("/api/hosts/atlas/commands").json()["commands"][0]["id"]
    stored = api.get(f"/api/commands/{cid}").json()
    assert stored["state"] == "succeeded"
    expected = "\n".join(line["text"] for line in stored["output"])
    page.wait_for_function(
        """(text) => [...document.querySelectorAll('#dock-view .ln-row .txt')]
            .map((n) => n.textContent).join('\\n') === text""",
        arg=expected,
    )
    download = tab.context.request.get(f"{rf.base}/api/commands/{cid}/log.txt")
    assert download.text() == output_text(stored["output"])
    page.keyboard.press("Escape")  # leaves full screen
    expect(page.locator("#dock-view .logview")).not_to_have_class(re.compile(r"\bfull\b"))
    chip = col(page, "atlas", "activity").locator(f'[data-open-log="{cid}"]')
    expect(chip).to_have_text("switch succeeded")
    expect(col(page, "atlas", "generation")).to_have_text("2")  # the new generation, live
    tab.assert_clean()


def test_a_wrong_password_is_refused_with_a_message(fleet, tab):
    rf = fleet(hosts=1, agents=False)
    page = tab.page
    page.goto(f"{rf.base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", rf.fleet.password + "-wrong")
    with page.expect_response(f"{rf.base}/login") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    page.wait_for_load_state()

    expect(page.locator(".error[role=alert]")).to_have_text("Wrong user name or password.")
    assert page.url == f"{rf.base}/login"
    expect(page.locator("input[name=password]")).to_be_visible()
    assert not any(c["name"] == "nixfleet_session" for c in tab.context.cookies())
    # Whatever cookies the browser holds, they open nothing.
    assert tab.context.request.get(f"{rf.base}/api/hosts").status == 401
    page.goto(f"{rf.base}/")
    assert page.url == f"{rf.base}/login"

    # The browser reports the 401 document load itself; that is the refusal, not a bug.
    tab.forgive_console_errors(re.compile(r"status of 401 \(Unauthorized\) \(\S+/login\)$"))
    tab.assert_clean()


def test_logging_out_through_the_button_ends_the_session(fleet, tab):
    rf = fleet(hosts=1, agents=False)
    page = log_in(tab, rf)
    with page.expect_response(f"{rf.base}/logout") as answer:
        page.click('header form[action="/logout"] button')
    assert answer.value.status == 303, answer.value.text()
    page.wait_for_url(f"{rf.base}/login")
    assert tab.context.request.get(f"{rf.base}/api/hosts").status == 401
    tab.assert_clean()


def test_bulk_test_on_selected_hosts_is_a_rollout_confirmed_first_and_reported_truly(fleet, tab):
    rf = fleet(hosts=3)
    page = log_in(tab, rf)
    for host in ("atlas", "borealis", "cirrus"):
        expect(status(page, host)).to_have_text("online")

    page.check('input[data-select="atlas"]')
    page.check('input[data-select="borealis"]')
    expect(page.locator("#sel-count")).to_have_text("2")
    expect(page.locator('input[data-select="atlas"]')).to_be_checked()
    expect(page.locator('input[data-select="borealis"]')).to_be_checked()
    expect(page.locator('input[data-select="cirrus"]')).not_to_be_checked()

    page.click('button[data-bulk="test"]')
    dialog = page.locator("#rollout-confirm")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#rollout-plan")).to_contain_text(
        "Test on 2 hosts in 2 waves: first atlas, then waves of 1."
    )
    assert rf.api().get("/api/hosts/atlas/commands").json()["commands"] == []  # nothing yet
    dialog.locator("#rollout-start").click()
    expect(dialog).to_be_hidden()
    # The result line follows the rollout to its end instead of saying "2 queued" forever.
    expect(page.locator("#bulk-result")).to_contain_text(
        "test rollout (completed): 2 succeeded", timeout=30_000
    )

    api = rf.api()

    def finished_tests(host: str) -> list[dict[str, Any]] | None:
        cmds = api.get(f"/api/hosts/{host}/commands").json()["commands"]
        return cmds if cmds and all(c["state"] in FINISHED for c in cmds) else None

    for host in ("atlas", "borealis"):
        cmds = wait_for(lambda h=host: finished_tests(h), 25, f"{host}'s test to finish")
        assert [(c["kind"], c["state"]) for c in cmds] == [("test", "succeeded")], cmds
        # The result reaches the page live: the tests badge shows passed/total.
        tests = col(page, host, "checks").locator('[data-check="tests"]')
        expect(tests).to_have_text(re.compile(r"^tests \d+/\d+$"))
    assert api.get("/api/hosts/cirrus/commands").json()["commands"] == []
    expect(col(page, "cirrus", "checks").locator('[data-check="tests"]')).to_be_hidden()
    tab.assert_clean()


def test_adding_a_host_shows_its_enrollment_code_once_and_the_row_appears_live(fleet, tab):
    rf = fleet(hosts=1)
    page = log_in(tab, rf)
    expect(row(page, "atlas")).to_be_visible()
    expect(row(page, "web-01")).to_have_count(0)
    mark_page(page)

    page.click("#open-add-host")
    form = page.locator("#add-host-form")
    form.locator("input[name=host_id]").fill("web-01")
    form.locator("input[name=location]").fill("rack C")
    form.locator("input[name=device_type]").fill("server")
    form.locator("button[type=submit]").click()

    token_el = page.locator("#add-host-result .token")
    expect(token_el).to_have_text(re.compile(r"^nfe_\S{20,}$"))
    token = token_el.text_content()
    assert token
    expect(page.locator("#add-host-result")).to_contain_text("Added web-01.")
    expect(form.locator("input[name=host_id]")).to_have_value("")  # the form was reset

    new_row = row(page, "web-01")
    expect(new_row).to_be_visible()
    expect(status(page, "web-01")).to_have_text("offline")
    expect(new_row).to_contain_text("rack C · server")
    expect(new_row).to_contain_text("not enrolled")
    expect(page.locator("#hosts tbody tr.host")).to_have_count(2)
    assert_not_reloaded(page)

    # Shown once: neither a reload nor the API gives the token back.
    hosts = rf.api().get("/api/hosts")
    assert "web-01" in [h["id"] for h in hosts.json()["hosts"]]
    assert token not in hosts.text
    page.reload()
    expect(row(page, "web-01")).to_be_visible()
    expect(page.locator("#add-host-result")).to_have_text("")
    assert token not in page.content()
    tab.assert_clean()


def test_the_page_recovers_by_itself_after_a_dashboard_restart(fleet, tab):
    rf = fleet(hosts=2)
    page = log_in(tab, rf)
    expect(status(page, "atlas")).to_have_text("online")
    expect(col(page, "atlas", "activity")).to_have_text("—")
    mark_page(page)

    errors_before_outage = len(tab.console_errors)
    rf.kill_dashboard()
    expect(page.locator("#conn")).to_have_text("reconnecting…")
    rf.start_dashboard()
    expect(page.locator("#conn")).to_have_text("live")
    # The killed server cut the event stream, and reconnect attempts may have been refused
    # while it was down: Chromium logs those network failures of /api/events, and only them.
    tab.forgive_console_errors(
        re.compile(r"^Failed to load resource: net::ERR_[A-Z_]+ \(\S+/api/events\)$"),
        since=errors_before_outage,
    )

    api = rf.api()
    api.wait_online(["atlas"], timeout=25)
    cid = api.command("atlas", "switch")
    assert api.wait_state(cid, FINISHED, timeout=25)["state"] == "succeeded"

    # Only the reconnected event stream can have told the page about this command.
    entry = col(page, "atlas", "activity").locator(f'[data-open-log="{cid}"]')
    expect(entry).to_have_text("switch succeeded")
    expect(col(page, "atlas", "generation")).to_have_text("2")  # the generation it switched to
    expect(status(page, "atlas")).to_have_text("online")
    # The status tooltip counts the drop the restart caused.
    expect(col(page, "atlas", "status")).to_have_attribute(
        "title", re.compile(r"1 reconnect in the last hour")
    )
    expect(col(page, "borealis", "status")).to_have_attribute(
        "title", re.compile("connected since")
    )
    assert_not_reloaded(page)
    tab.assert_clean()


def _answer_streams(page: Page, status: int) -> None:
    """Answer every new /api/events (the page's stream and its probe) with status."""
    body = '{"error": "database_unavailable", "detail": "try again shortly"}'
    page.route(
        "**/api/events",
        lambda route: route.fulfill(status=status, content_type="application/json", body=body),
    )


def test_a_stream_answered_503_is_waited_out_and_a_401_ends_the_session(fleet, tab):
    # A browser gives up on an event stream answered anything but 200. Only a 401 means
    # the session is gone; a 503 (PostgreSQL restarting behind the dashboard) is waited out
    # on the same page.
    rf = fleet(hosts=1, agents=False)
    page = log_in(tab, rf)
    mark_page(page)
    errors_before = len(tab.console_errors)
    _answer_streams(page, 503)
    rf.kill_dashboard()  # cuts the open stream; the browser's reconnect meets the 503
    rf.start_dashboard()
    expect(page.locator("#conn")).to_have_text("dashboard unavailable — retrying…")
    assert page.url == f"{rf.base}/"
    page.unroute("**/api/events")
    expect(page.locator("#conn")).to_have_text("live")  # the same page, its stream reopened
    assert_not_reloaded(page)

    _answer_streams(page, 401)
    rf.kill_dashboard()
    rf.start_dashboard()
    page.wait_for_url(f"{rf.base}/login")
    tab.forgive_console_errors(
        re.compile(r"(status of (401|503)|net::ERR_[A-Z_]+) .*/api/events\)$"), since=errors_before
    )
    tab.assert_clean()


def test_a_hosts_last_tls_failure_is_shown_in_its_row(fleet, tab, ca):
    authority, ca_file = ca
    good, wrong_key = authority.issue_cert("127.0.0.1"), authority.issue_cert("127.0.0.1")
    rf = fleet(hosts=1, agents=False)
    proxy = TLSProxy(server_context(wrong_key), rf.port)
    try:
        rf.start_agent("atlas", args=pinned_agent_args(proxy, ca_file, pin_of(good)))
        log = rf.host("atlas").root / "agent.log"
        wait_for(lambda: "pin_mismatch (2 so far)" in log.read_text(), 30, "two failures")
        page = log_in(tab, rf)
        expect(status(page, "atlas")).to_have_text("offline")
        proxy.set_context(server_context(good))  # the dashboard's real key is back
        expect(status(page, "atlas")).to_have_text("online")
        badge = col(page, "atlas", "checks").locator('[data-check="link"]')
        expect(badge).to_have_text("TLS")
        expect(badge).to_have_attribute(
            "title", re.compile(r"Last TLS failure: pin mismatch, \d+ times, \d+ (s|min) ago")
        )
        expect(page.locator('#hosts [data-check="link"]:visible')).to_have_count(1)
        tab.assert_clean()
    finally:
        proxy.close()


def test_rotating_and_revoking_a_token_in_the_ui_cuts_the_agent_off(fleet, tab):
    rf = fleet(hosts=2)
    page = log_in(tab, rf)
    expect(status(page, "atlas")).to_have_text("online")
    page.click('#hosts a[data-host-link="atlas"]')
    page.wait_for_url(f"{rf.base}/hosts/atlas")
    expect(page.locator("#host-status")).to_have_text("online")
    card = page.locator("#identity")
    expect(card).to_be_visible()
    expect(card.locator('[data-fact="Credential"]')).to_have_text("own token")
    expect(card.locator('[data-fact="Last used"]')).to_contain_text("from 127.0.0.1")

    card.locator('button[data-identity="rotate"]').click()
    token_el = card.locator("#identity-result .token")
    expect(token_el).to_have_text(re.compile(r"^nfa_\S{20,}$"))
    new_token = token_el.text_content()
    # The old token was cut off.
    expect(page.locator("#host-status")).to_contain_text("offline")
    assert rf.api().host("borealis")["online"]
    assert new_token and new_token not in rf.api().get("/api/hosts").text

    page.once("dialog", lambda dialog: dialog.accept())
    card.locator('button[data-identity="revoke"]').click()
    expect(card.locator("#identity-result")).to_contain_text("Revoked")
    expect(card.locator('[data-fact="Credential"]')).to_have_text("revoked")

    card.locator('button[data-identity="enroll-code"]').click()
    expect(card.locator("#identity-result .token")).to_have_text(re.compile(r"^nfe_\S{20,}$"))


def test_an_invalid_host_id_shows_the_message_the_api_gives(fleet, tab):
    rf = fleet(hosts=1, agents=False)
    page = log_in(tab, rf)
    expected = rf.api().post("/api/hosts", {"host_id": "Web_01"}).json()["detail"]
    errors_before = len(tab.console_errors)
    page.click("#open-add-host")
    form = page.locator("#add-host-form")
    form.locator("input[name=host_id]").fill("Web_01")
    with page.expect_response(f"{rf.base}/api/hosts") as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.status == 422
    expect(page.locator("#add-host-result")).to_have_text(expected)
    expect(row(page, "web_01")).to_have_count(0)
    # Chromium logs the 422 of the fetch itself; that is the refusal being shown.
    tab.forgive_console_errors(
        re.compile(r"status of 422 \(Unprocessable (Entity|Content)\) \(\S+/api/hosts\)$"),
        since=errors_before,
    )
    tab.assert_clean()


def test_log_out_everywhere_sends_every_open_tab_to_the_login_page(fleet, tab, browser):
    rf = fleet(hosts=1, agents=False)
    page = log_in(tab, rf)
    other = browser.new_context()
    try:
        other_page = other.new_page()
        other_page.set_default_timeout(TIMEOUT_MS)
        other_page.goto(f"{rf.base}/login")
        other_page.fill("input[name=username]", "admin")
        other_page.fill("input[name=password]", rf.fleet.password)
        other_page.click("button[type=submit]")
        other_page.wait_for_url(f"{rf.base}/")
        expect(other_page.locator("#conn")).to_have_text("live")

        page.click("#logout-everywhere")
        page.wait_for_url(f"{rf.base}/login")
        # The other browser's live stream is told its session ended, and it leaves.
        other_page.wait_for_url(f"{rf.base}/login")
        assert other.request.get(f"{rf.base}/api/hosts").status == 401
        assert tab.context.request.get(f"{rf.base}/api/hosts").status == 401
    finally:
        other.close()
    tab.assert_clean()


def test_a_totp_login_works_in_the_browser_and_a_replayed_code_does_not(fleet, tab):
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    rf = fleet(
        hosts=1,
        agents=False,
        env={"NIXFLEET_TOTP_SECRET": secret, "NIXFLEET_REQUIRE_TOTP": "true"},
    )
    page = tab.page
    code = pyotp.TOTP(secret).now()
    for attempt in ("first", "replay"):
        page.goto(f"{rf.base}/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", rf.fleet.password)
        page.fill("input[name=code]", code)
        with page.expect_response(f"{rf.base}/login") as answer:
            page.click("button[type=submit]")
        if attempt == "first":
            assert answer.value.status == 303
            page.wait_for_url(f"{rf.base}/")
            expect(page.locator("#conn")).to_have_text("live")
            tab.context.clear_cookies()
        else:
            assert answer.value.status == 401
            page.wait_for_load_state()
            expect(page.locator(".error[role=alert]")).to_have_text(
                "Wrong user name, password or code."
            )
    tab.forgive_console_errors(re.compile(r"status of 401 \(Unauthorized\) \(\S+/login\)$"))
    tab.assert_clean()


def test_preview_shows_what_a_deploy_would_change_on_the_host_page_and_across_a_selection(
    fleet, tab
):
    from nixfleet.demo.configrepo import update_nixpkgs

    rf = fleet(hosts=2, build_seconds=0, env={"NIXFLEET_TARGET_CACHE_S": "1"})
    page = log_in(tab, rf)
    deploy = col(page, "atlas", "deploy").locator("[data-state]")
    expect(deploy).to_have_attribute("data-state", "never_deployed")
    api = rf.api()
    for host in ("atlas", "borealis"):
        assert api.wait_state(api.command(host, "pull-switch"), FINISHED)["state"] == "succeeded"
    expect(deploy).to_have_attribute("data-state", "current")
    update_nixpkgs(rf.fleet.root / "config")
    expect(deploy).to_have_attribute("data-state", "behind")

    page.check('input[data-select="atlas"]')
    page.check('input[data-select="borealis"]')
    page.click('button[data-bulk="plan"]')
    expect(page.locator("#rollout-confirm")).to_be_hidden()  # a preview changes nothing
    expect(page.locator("#bulk-result")).to_have_text(
        "Preview: 2 hosts: 2 would change, 0 identical; "
        "linux (+ initrd-linux) 6.6.30 → 6.6.31 on 1, reboot on 1",
        timeout=30_000,
    )

    page.goto(f"{rf.base}/hosts/atlas")
    expect(page.locator("#plan-summary")).to_contain_text("linux (+ initrd-linux) 6.6.30 → 6.6.31")
    expect(page.locator("#plan-summary")).to_contain_text("needs a reboot")
    expect(page.locator("#plan-changes tbody tr")).to_have_count(2)
    page.click('button[data-action="plan"]')  # the same target again: nothing new to build
    expect(page.locator("#action-result")).to_contain_text("plan:")


def test_the_output_of_a_long_build_is_shown_to_its_last_line(fleet, tab):
    """More lines than one API answer carries: the page follows the output cursor."""
    rf = fleet(hosts=1)
    build = rf.fleet.root / "bin" / "nixos-rebuild"
    build.write_text("#!/usr/bin/env python3\nfor i in range(12_000):\n    print(f'line {i}')\n")
    build.chmod(0o755)
    api = rf.api()
    cid = api.command("atlas", "switch")
    assert api.wait_state(cid, FINISHED, timeout=60)["state"] == "succeeded"
    first = api.get(f"/api/commands/{cid}").json()
    assert first["output_next"] is not None  # the page needs more than one answer
    page = log_in(tab, rf)
    col(page, "atlas", "activity").locator(f'[data-open-log="{cid}"]').click()
    counts = page.locator('#dock-view [data-log="counts"]')
    expect(counts).to_contain_text("12001 lines")  # "$ nixos-rebuild …" and 12,000 more
    expect(page.locator("#dock-view .ln-row .txt").last).to_have_text("line 11999")
    tab.assert_clean()
