"""The "Add a host" snippet names the config repo, but never a credential inside its URL."""

from __future__ import annotations

import pytest

SECRET = "ghp_s3cretTokenInTheUrl0000"


@pytest.mark.parametrize(
    ("configured", "shown"),
    [
        (
            f"https://deploy:{SECRET}@git.invalid:8443/me/cfg.git",
            "https://git.invalid:8443/me/cfg.git",
        ),
        ("git@git.invalid:me/cfg.git", "git@git.invalid:me/cfg.git"),
    ],
)
def test_the_page_shows_the_config_repo_without_its_credential(make_fleet, configured, shown):
    rf = make_fleet(hosts=1, agents=False, env={"NIXFLEET_CONFIG_REPO": configured})
    page = rf.api().get("/").text
    assert f'data-repo-url="{shown}"' in page
    assert SECRET not in page
