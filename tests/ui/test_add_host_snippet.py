"""'Add a host' shows what to paste on the new host, code filled in, each part copyable; what
is copied works: the NixOS part evaluates with the real module system, and the agent command
line, run as copied, enrolls the host."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from playwright.sync_api import expect
from screenshots import SHOTS
from test_dashboard_ui import browser, fleet, log_in, tab  # noqa: F401 (fixtures)
from tests.nix.moduleeval import evaluate, needs_lib

from conftest import wait_for

STATE = "/var/lib/nixfleet-agent"


def add_host(page, host_id: str) -> str:
    page.click("#open-add-host")
    form = page.locator("#add-host-form")
    form.locator("input[name=host_id]").fill(host_id)
    form.locator("button[type=submit]").click()
    token_el = page.locator("#add-host-result .token")
    expect(token_el).to_have_text(re.compile(r"^nfe_\S{20,}$"))
    return str(token_el.text_content())


def copied(page, name: str) -> str:
    page.click(f'#enroll-snippet button[data-copy="{name}"]')
    expect(page.locator(f'#enroll-snippet button[data-copy="{name}"]')).to_have_text("Copied")
    text = page.evaluate("navigator.clipboard.readText()")
    assert text == page.locator(f'#enroll-snippet pre[data-snippet="{name}"]').text_content()
    return str(text)


@needs_lib
def test_the_copied_nixos_snippet_configures_the_agent_for_the_new_host(fleet, tab):  # noqa: F811
    rf = fleet(hosts=1)
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=rf.base)
    page = log_in(tab, rf)
    code = add_host(page, "Web-02")
    box = page.locator("#enroll-snippet")
    expect(box).to_be_visible()
    expect(box.locator("pre")).to_have_count(3)
    assert code in copied(page, "code")

    snippet = copied(page, "nixos")
    assert code not in snippet, "the code goes into a file, never into the Nix configuration"
    result = evaluate("nixos-agent", "{ " + snippet + " }")
    assert result["assertions"] == []
    config = result["agentConfig"]
    assert (config["host_id"], config["url"]) == ("web-02", rf.base)
    assert config["repo_url"] == str(rf.fleet.env["NIXFLEET_CONFIG_REPO"])
    unit = result["systemd"]["nixfleet-agent"]
    assert unit["serviceConfig"]["LoadCredential"] == [f"enroll-code:{STATE}/enroll-code"]

    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "add-host-1400.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    box.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "add-host-390.png"), full_page=True)
    tab.assert_clean()


def test_the_copied_agent_command_line_enrolls_the_host(fleet, tab, tmp_path):  # noqa: F811
    rf = fleet(hosts=1)
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=rf.base)
    page = log_in(tab, rf)
    add_host(page, "web-03")
    store_code, command = copied(page, "agent").split("\n", 1)
    command = command.replace("\\\n", " ")  # the shell's line continuations
    # Run as copied, with the host's /var/lib/nixfleet-agent moved into a temporary directory.
    subprocess.run(["sh", "-c", store_code], cwd=tmp_path, check=True, timeout=10)
    assert (tmp_path / "web-03.code").stat().st_mode & 0o077 == 0
    argv = shlex.split(command.replace(STATE, str(tmp_path / "state")))
    assert argv[:2] == ["nixfleet", "agent"]
    (tmp_path / "system").mkdir()
    extra = ["--system-dir", str(tmp_path / "system"), "--systemd-run", "no"]
    env = {**os.environ, **rf.fleet.env, "NIXFLEET_TEST_MARK": rf.mark}
    rf.agents["web-03"] = subprocess.Popen(
        [sys.executable, "-m", "nixfleet", *argv[1:], *extra], cwd=tmp_path, env=env
    )
    api = rf.api()
    api.wait_online(["web-03"])
    assert api.host("web-03")["identity_state"] == "active"
    assert (tmp_path / "state" / "token").read_text().startswith("nfa_")
    wait_for(lambda: page.locator('#hosts tr[data-host="web-03"]').count() == 1, 10, "the row")
    tab.assert_clean()
