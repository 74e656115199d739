"""The build-log viewer in real Chromium: ANSI colours as classed spans (the parser served
by the dashboard, tested in the page), error:/warning: lines marked with a jump to the
first error, follow that pauses on scroll-up and resumes with a button, search in a
50,000-line log, the column toggles, and the download of a 100,000-line log."""

from __future__ import annotations

import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import test_dashboard_ui as ui
from playwright.sync_api import Page, expect
from test_dashboard_ui import FINISHED, col, log_in

from conftest import RunningFleet

browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect
ESC = "\x1b"


@pytest.fixture(scope="module")
def idle(make_module_fleet):
    """One host without an agent for the tests that seed a finished log of their own.

    Started on a worker thread, as ui.fleet does (Playwright's loop runs on this one).
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(make_module_fleet, hosts=1, agents=False).result()


def seed_log(rf: RunningFleet, host: str, lines: list[tuple[str, str]]) -> str:
    """Return the id of a finished command of host whose stored output is lines.

    The command is queued through the API (the host's agent is not running), then its
    output is written the way the dashboard stores what an agent streams.
    """
    cid = rf.api().command(host, "switch")
    now = time.time()
    with sqlite3.connect(rf.fleet.root / "dashboard" / "nixfleet.db") as db:
        db.executemany(
            "INSERT INTO output (command_id, seq, stream, text, ts) VALUES (?, ?, ?, ?, ?)",
            [
                (cid, i + 1, stream, text, now - 60 + i / 1000)
                for i, (stream, text) in enumerate(lines)
            ],
        )
        db.execute(
            "UPDATE commands SET state = 'failed', exit_code = 1, started_at = ?, finished_at = ? "
            "WHERE id = ?",
            (now - 60, now, cid),
        )
    return cid


def open_log(page: Page, host: str, cid: str) -> None:
    col(page, host, "activity").locator(f'[data-open-log="{cid}"]').click()
    expect(page.locator("#dock-view .logview")).to_be_visible()


def row_of(page: Page, seq: int) -> Any:
    return page.locator(f'#dock-view .ln-row[data-seq="{seq}"]')


def test_the_ansi_parser_turns_sgr_codes_into_classes_and_drops_every_other_code(idle, tab):
    rf = idle
    page = log_in(tab, rf)
    parse = """([text, state]) => {
        const r = NF.ansi.parse(text, state || undefined);
        return { segs: r.segments, state: r.state };
    }"""
    cases: list[tuple[str, list[dict[str, str]]]] = [
        ("plain", [{"text": "plain", "cls": ""}]),
        (
            f"{ESC}[31;1merror:{ESC}[0m rest",
            [{"text": "error:", "cls": "ansi-red ansi-bold"}, {"text": " rest", "cls": ""}],
        ),
        (
            f"{ESC}[1;35mbold magenta{ESC}[22m thin{ESC}[39m plain",
            [
                {"text": "bold magenta", "cls": "ansi-magenta ansi-bold"},
                {"text": " thin", "cls": "ansi-magenta"},
                {"text": " plain", "cls": ""},
            ],
        ),
        (f"{ESC}[92mbright{ESC}[m", [{"text": "bright", "cls": "ansi-bright-green"}]),
        (f"{ESC}[41;37mbg{ESC}[49m", [{"text": "bg", "cls": "ansi-white ansi-bg-red"}]),
        (f"{ESC}[38;5;196m256{ESC}[0m", [{"text": "256", "cls": "ansi-bright-red"}]),
        (f"{ESC}[38;2;0;0;238mtrue{ESC}[0m", [{"text": "true", "cls": "ansi-blue"}]),
        (f"{ESC}[2K{ESC}[1Acursor codes go", [{"text": "cursor codes go", "cls": ""}]),
        (f"{ESC}]8;;https://example.org{ESC}\\link{ESC}]8;;{ESC}\\", [{"text": "link", "cls": ""}]),
        ("progress 10%\rprogress 99%", [{"text": "progress 99%", "cls": ""}]),
        (f"broken {ESC}[31", [{"text": "broken ", "cls": ""}]),
        ("<b>not html</b>\x07\x08", [{"text": "<b>not html</b>", "cls": ""}]),
    ]
    for text, expected in cases:
        got = page.evaluate(parse, [text, None])
        assert got["segs"] == expected, (text, got["segs"])
    # A colour left open runs on into the next line, as on a terminal.
    first = page.evaluate(parse, [f"{ESC}[33mstarts yellow", None])
    second = page.evaluate(parse, ["still yellow", first["state"]])
    assert second["segs"] == [{"text": "still yellow", "cls": "ansi-yellow"}]
    tab.assert_clean()


def test_colours_errors_and_warnings_render_in_the_viewer(idle, tab):
    rf = idle
    cid = seed_log(
        rf,
        "atlas",
        [
            ("stdout", "building the system configuration..."),
            (
                "stderr",
                f"{ESC}[35;1mcopying path{ESC}[0m '/nix/store/abc-git' from 'https://cache.nixos.org'...",
            ),
            ("stderr", f"{ESC}[33;1mwarning:{ESC}[0m Git tree '/etc/nixos' is dirty"),
            ("stderr", "<script>window.__pwned = 1</script>"),
            (
                "stderr",
                f"{ESC}[31;1merror:{ESC}[0m builder for '/nix/store/xyz.drv' failed (exit 1)",
            ),
            ("system", "FAIL build (exit 1)"),
        ],
    )
    page = log_in(tab, rf)
    open_log(page, "atlas", cid)
    expect(page.locator("#output-meta")).to_have_attribute("data-state", "failed")
    error = row_of(page, 5)
    expect(error).to_have_class("ln-row stderr error")
    expect(error.locator("span.ansi-red.ansi-bold")).to_have_text("error:")
    expect(row_of(page, 3)).to_have_class("ln-row stderr warning")
    expect(row_of(page, 3).locator("span.ansi-yellow.ansi-bold")).to_have_text("warning:")
    expect(row_of(page, 2).locator("span.ansi-magenta.ansi-bold")).to_have_text("copying path")
    # What a build prints is text, never markup, and no escape code reaches the page.
    expect(row_of(page, 4).locator(".txt")).to_have_text("<script>window.__pwned = 1</script>")
    assert page.evaluate("window.__pwned") is None
    assert ESC not in page.locator("#dock-view .log-window").text_content()
    expect(page.locator('#dock-view [data-log="counts"]')).to_have_text(
        "6 lines · 1 error · 1 warning"
    )
    tab.assert_clean()


def test_follow_pauses_when_scrolling_up_and_the_button_resumes_it(fleet, tab):
    # Long enough that lines still arrive after the reader scrolls up on a loaded machine
    # (at 14 s, a CI run once saw the build end first: the button said "Jump to the end").
    rf = fleet(hosts=1, build_seconds=24)
    # A real-Nix switch prints a dozen lines: a short window gives the log a box they overflow.
    tab.page.set_viewport_size({"width": 1400, "height": 380})
    page = log_in(tab, rf)
    page.click('button[data-action="pull-switch"][data-host="atlas"]')
    scroller = page.locator("#dock-view .log-scroll")
    # Wait until the log is taller than its box, then scroll up as a reader would.
    page.wait_for_function(
        "() => { const s = document.querySelector('#dock-view .log-scroll');"
        " return s && s.scrollHeight > s.clientHeight + 100; }"
    )
    at_bottom = "s => s.scrollHeight - s.scrollTop - s.clientHeight < 20"
    assert scroller.evaluate(at_bottom)  # following: the newest line is in view
    scroller.hover()
    page.mouse.wheel(0, -600)
    resume = page.locator('#dock-view [data-log="resume"]')
    expect(resume).to_be_visible()
    top = scroller.evaluate("s => s.scrollTop")
    # New lines arrive and are counted, but the reader's place is kept.
    expect(resume).to_have_text(re.compile(r"Resume following \(\d+ new lines\)"))
    assert abs(scroller.evaluate("s => s.scrollTop") - top) < 2
    resume.click()
    expect(resume).to_be_hidden()
    assert scroller.evaluate(at_bottom)
    api = rf.api()
    cid = api.get("/api/hosts/atlas/commands").json()["commands"][0]["id"]
    api.wait_state(cid, FINISHED, timeout=60)
    expect(page.locator("#output-meta")).to_have_attribute("data-state", "succeeded")
    stored = api.get(f"/api/commands/{cid}").json()["output"]
    expect(row_of(page, stored[-1]["seq"])).to_be_visible()  # still following: the end shows
    page.wait_for_function(f"() => ({at_bottom})(document.querySelector('#dock-view .log-scroll'))")
    tab.assert_clean()


def test_search_finds_a_line_in_a_50000_line_log_and_jumps_to_the_first_error(idle, tab):
    rf = idle
    lines = [("stderr", f"building '/nix/store/{i:08d}-pkg-{i}.drv'...") for i in range(50_000)]
    lines[43_209] = ("stderr", "checking the needle-in-the-haystack configuration")
    lines[30_000] = ("stderr", f"{ESC}[31;1merror:{ESC}[0m the one real failure")
    cid = seed_log(rf, "atlas", lines)
    page = log_in(tab, rf)
    open_log(page, "atlas", cid)
    counts = page.locator('#dock-view [data-log="counts"]')
    expect(counts).to_have_text("50000 lines · 1 error · 0 warnings")
    # Virtualised: a few dozen rows in the DOM, not 50,000.
    assert page.locator("#dock-view .ln-row").count() < 200

    page.fill('#dock-view [data-log="search"]', "needle-in-the")
    expect(page.locator('#dock-view [data-log="hits"]')).to_have_text("1 of 1")
    hit = row_of(page, 43_210)
    expect(hit).to_be_visible()
    expect(hit.locator("mark.hit.current")).to_have_text("needle-in-the")

    page.fill('#dock-view [data-log="search"]', "pkg-4999")  # 4999 and 49990..49999
    expect(page.locator('#dock-view [data-log="hits"]')).to_have_text("1 of 11")
    page.click('#dock-view [data-log="next"]')
    expect(page.locator('#dock-view [data-log="hits"]')).to_have_text("2 of 11")
    expect(row_of(page, 49_991).locator("mark.hit.current")).to_have_text("pkg-4999")

    page.click('#dock-view [data-log="first-error"]')
    error = row_of(page, 30_001)
    expect(error).to_be_visible()
    expect(error).to_have_class("ln-row stderr error jumped")
    tab.assert_clean()


def test_line_numbers_stream_time_and_wrap_toggles(idle, tab):
    rf = idle
    long = "x" * 600
    cid = seed_log(rf, "atlas", [("stdout", "first"), ("stderr", long), ("system", "last")])
    page = log_in(tab, rf)
    open_log(page, "atlas", cid)
    first = row_of(page, 1)
    expect(first.locator(".g-num")).to_have_text("1")
    page.click('#dock-view [data-log-toggle="numbers"]')
    expect(first.locator(".g-num")).to_have_count(0)
    page.click('#dock-view [data-log-toggle="stream"]')
    expect(row_of(page, 2).locator(".g-stream")).to_have_text("err")
    page.click('#dock-view [data-log-toggle="time"]')
    expect(first.locator(".g-time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    one_line = row_of(page, 2).evaluate("r => r.getBoundingClientRect().height")
    page.click('#dock-view [data-log-toggle="wrap"]')
    expect(page.locator('#dock-view [data-log-toggle="wrap"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    page.wait_for_function(
        f"() => document.querySelector('#dock-view .ln-row[data-seq=\"2\"]')"
        f".getBoundingClientRect().height > {one_line} * 2"
    )
    # Wrapped, the long line fits the box: nothing scrolls sideways.
    scroller = page.locator("#dock-view .log-scroll")
    assert scroller.evaluate("s => s.scrollWidth <= s.clientWidth")
    tab.assert_clean()


def test_download_returns_every_line_of_a_100000_line_log_and_needs_a_session(idle, tab):
    rf = idle
    lines = [
        ("stdout" if i % 3 else "stderr", f"line {i} {ESC}[32mok{ESC}[0m") for i in range(100_000)
    ]
    cid = seed_log(rf, "atlas", lines)
    page = log_in(tab, rf)
    open_log(page, "atlas", cid)
    link = page.locator('#dock-view [data-log="download"]')
    expect(link).to_have_attribute("href", f"/api/commands/{cid}/log.txt")
    with page.expect_download() as info:
        link.click()
    path = info.value.path()
    assert info.value.suggested_filename == f"atlas-switch-{cid[:8]}.log"
    got = path.read_text().split("\n")
    assert got[-1] == ""
    assert got[:-1] == [text for _, text in lines]
    plain = tab.context.request.get(f"{rf.base}/api/commands/{cid}/log.txt?ansi=false").text()
    assert plain.split("\n")[99_999] == "line 99999 ok"
    # Without a session the log is not given out.
    anonymous = httpx.get(f"{rf.base}/api/commands/{cid}/log.txt")
    assert anonymous.status_code == 401
    assert "line 1 " not in anonymous.text
    unknown = tab.context.request.get(f"{rf.base}/api/commands/{'0' * 32}/log.txt")
    assert unknown.status == 404
    tab.assert_clean()
