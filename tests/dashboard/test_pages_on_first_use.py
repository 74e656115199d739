"""Jinja is loaded when the dashboard renders its first page (dashboard/templating.py):
the first page after a start is the whole page, with its nonce, status and headers."""

from __future__ import annotations

import re

import httpx


def _nonce(res: httpx.Response) -> str:
    found = re.search(r"'nonce-([A-Za-z0-9_-]+)'", res.headers["content-security-policy"])
    assert found, res.headers["content-security-policy"]
    return found.group(1)


def test_the_first_request_after_start_gets_the_whole_login_page(make_fleet):
    fleet = make_fleet(hosts=1, agents=False)

    res = httpx.get(f"{fleet.base}/login")

    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/login"' in res.text
    assert f'nonce="{_nonce(res)}"' in res.text


def test_a_first_page_rendered_as_an_error_keeps_its_status_and_headers(make_fleet):
    fleet = make_fleet(hosts=1, agents=False)
    with httpx.Client(base_url=fleet.base, timeout=10) as browser:
        login = browser.post("/login", data={"username": "admin", "password": fleet.fleet.password})
        assert login.status_code == 303  # a redirect: no page rendered yet

        missing = browser.get("/hosts/no-such-host")
        panel = browser.get("/security/panel")

    assert missing.status_code == 404
    assert "no-such-host" in missing.text
    assert f'nonce="{_nonce(missing)}"' in missing.text
    assert panel.status_code == 200
    assert panel.headers["cache-control"] == "no-store"
