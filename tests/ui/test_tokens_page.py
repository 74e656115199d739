"""The API tokens page in real Chromium: every command kind can be named in a token's
scope from the form, and the token made there is held to it by the API."""

from __future__ import annotations

import re

import httpx
import test_dashboard_ui as ui
from playwright.sync_api import expect
from test_dashboard_ui import log_in

from nixfleet.core.commands import CommandKind

browser, tab, fleet, _bounded_expect = ui.browser, ui.tab, ui.fleet, ui._bounded_expect


def test_a_deploy_only_token_made_in_the_form_deploys_and_can_do_nothing_else(fleet, tab):
    rf = fleet(hosts=1, build_seconds=0, failing=())
    page = log_in(tab, rf)
    page.goto(f"{rf.base}/tokens")
    offered = page.locator('input[name="kinds"]').evaluate_all("xs => xs.map((x) => x.value)")
    assert sorted(offered) == sorted(k.value for k in CommandKind)

    form = page.locator("#new-token")
    form.locator('input[name="name"]').fill("ci-deploy")
    form.locator('select[name="role"]').select_option("operator")
    form.locator('input[name="kinds"][value="pull-switch"]').check()
    form.locator("button[type=submit]").click()
    secret = page.locator("#new-secret")
    expect(secret).to_have_text(re.compile(r"^nft_"))
    row = page.locator("#token-list tbody tr", has_text="ci-deploy")
    expect(row).to_contain_text("only pull-switch")

    auth = {"Authorization": f"Bearer {secret.text_content()}"}
    with httpx.Client(base_url=rf.base, timeout=10, headers=auth) as http:
        deploy = http.post("/api/hosts/atlas/command", json={"command": "pull-switch"})
        assert deploy.status_code == 202, deploy.text
        for other in ("switch", "rollback", "restart"):
            refused = http.post("/api/hosts/atlas/command", json={"command": other})
            assert refused.status_code == 403, other
            assert refused.json()["detail"] == f"This token may not {other}."
    tab.assert_clean()
