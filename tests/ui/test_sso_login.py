"""Single sign-on in a real browser: headless Chromium, the real dashboard, and a real
OpenID Connect provider (oidc-provider on Node, tests/sso/provider) on loopback.

With NIXFLEET_DOCS_SCREENSHOTS=1 the login page's pictures are written to docs/.
"""

from __future__ import annotations

import os
from pathlib import Path

import test_dashboard_ui as ui
from playwright.sync_api import Page, expect

import oidcprovider

browser, _bounded_expect = ui.browser, ui._bounded_expect
provider, sso_fleet = oidcprovider.provider, oidcprovider.sso_fleet
DOCS = Path(__file__).resolve().parents[2] / "docs"


def sign_in_at_the_provider(page: Page, login: str) -> None:
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(oidcprovider.PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_signing_in_with_the_provider_lands_on_the_fleet_with_the_mapped_role(
    sso_fleet, browser, tmp_path
):
    tab = ui.open_tab(browser)
    try:
        page = tab.page
        page.goto(f"{sso_fleet.base}/login")
        page.get_by_role("link", name="Sign in with Test ID").click()
        expect(page.get_by_label("Login")).to_be_visible()  # the provider's own page
        assert page.url.startswith(sso_fleet.fleet.env["NIXFLEET_OIDC_ISSUER"])
        sign_in_at_the_provider(page, "alice")
        expect(page).to_have_url(f"{sso_fleet.base}/")
        expect(page.locator(".user")).to_have_text("alice")
        # fleet-admins maps to admin: the admin-only Users page is offered and opens.
        page.get_by_role("link", name="Users").click()
        row = page.locator("#user-list tbody tr", has_text="alice")
        expect(row).to_contain_text("single sign-on")
        expect(row.get_by_label("Role of alice")).to_have_value("admin")
        page.screenshot(path=str(tmp_path / "users-with-sso.png"))
        tab.assert_clean()
    finally:
        tab.context.close()


def test_a_refused_sign_in_shows_why_on_the_login_page(sso_fleet, browser):
    tab = ui.open_tab(browser)
    try:
        page = tab.page
        page.goto(f"{sso_fleet.base}/login")
        page.get_by_role("link", name="Sign in with Test ID").click()
        sign_in_at_the_provider(page, "una")
        expect(page.get_by_role("alert")).to_contain_text("has no NixFleet role")
        page.goto(f"{sso_fleet.base}/")
        expect(page).to_have_url(f"{sso_fleet.base}/login")  # no session
        tab.forgive_console_errors(ui.re.compile("403"))  # the refusal page's own status
        tab.assert_clean()
    finally:
        tab.context.close()


def test_screenshots_of_the_login_page_with_single_sign_on(sso_fleet, browser, tmp_path):
    target = DOCS if os.environ.get("NIXFLEET_DOCS_SCREENSHOTS") else tmp_path
    for name, options in {
        "login-sso-light.png": {
            "viewport": {"width": 1400, "height": 900},
            "color_scheme": "light",
        },
        "login-sso-dark.png": {"viewport": {"width": 1400, "height": 900}, "color_scheme": "dark"},
        "login-sso-phone-light.png": {
            "viewport": {"width": 390, "height": 844},
            "is_mobile": True,
            "color_scheme": "light",
        },
        "login-sso-phone-dark.png": {
            "viewport": {"width": 390, "height": 844},
            "is_mobile": True,
            "color_scheme": "dark",
        },
    }.items():
        tab = ui.open_tab(browser, **options)
        try:
            tab.page.goto(f"{sso_fleet.base}/login")
            expect(tab.page.get_by_role("link", name="Sign in with Test ID")).to_be_visible()
            assert (
                tab.page.evaluate("document.documentElement.scrollWidth")
                <= options["viewport"]["width"]
            )
            tab.page.screenshot(path=str(target / name))
            tab.assert_clean()
        finally:
            tab.context.close()
