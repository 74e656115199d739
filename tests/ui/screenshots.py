"""Screenshots of a page as operators see it: a 1400×900 desk and a 390×844 phone, each in
the light and the dark theme. Each look gets a fresh logged-in tab that must stay clean (no
console error, no CSP violation) and a page no wider than its window. The pictures go to
NIXFLEET_SCREENSHOTS (default /tmp/nixfleet-screenshots), to be looked at, not compared."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import test_dashboard_ui as ui
from playwright.sync_api import Browser, Page
from test_dashboard_ui import log_in

from conftest import RunningFleet

SHOTS = Path(os.environ.get("NIXFLEET_SCREENSHOTS", "/tmp/nixfleet-screenshots"))
LOOKS = [
    (scheme, width, height)
    for scheme in ("light", "dark")
    for width, height in ((1400, 900), (390, 844))
]


class Look:
    """One tab in one look: open the page, then take(name) once it shows what it must."""

    def __init__(self, page: Page, scheme: str, width: int) -> None:
        self.page, self.scheme, self.width = page, scheme, width

    def take(self, name: str, full_page: bool = True) -> Path:
        assert self.page.evaluate("document.documentElement.scrollWidth") <= self.width, (
            f"{name} scrolls sideways at {self.width} px"
        )
        path = SHOTS / f"{name}-{self.width}-{self.scheme}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def in_every_look(browser: Browser, rf: RunningFleet, shoot: Callable[[Look], None]) -> None:
    """Log in once per look and call shoot with it; the tab must end clean."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for scheme, width, height in LOOKS:
        tab = ui.open_tab(browser, viewport={"width": width, "height": height}, color_scheme=scheme)
        try:
            shoot(Look(log_in(tab, rf), scheme, width))
            tab.assert_clean()
        finally:
            tab.context.close()
