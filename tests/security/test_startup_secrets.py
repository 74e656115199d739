"""Outside demo mode start-up refuses missing, short and placeholder secrets, by name."""

from __future__ import annotations

import pytest

from nixfleet.config import load_settings
from nixfleet.config.posture import posture
from nixfleet.core.errors import ConfigError
from nixfleet.security.passwords import hash_password

HASH = hash_password("correct horse battery")
GOOD = "Zt8vQ2pX7mK4rW9sL1nB6cF3hJ5dG0aE"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("NIXFLEET_"):
            monkeypatch.delenv(key)


def settings(**kw):
    base = {
        "admin_password_hash": HASH,
        "agent_token_hash_secret": GOOD,
        "session_secrets": GOOD[::-1],
    }
    return load_settings(**{**base, **kw})


def test_good_secrets_load():
    assert len(settings().session_secrets) == 1


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"session_secrets": ""}, "NIXFLEET_SESSION_SECRETS", "missing"),
        ({"session_secrets": "short"}, "NIXFLEET_SESSION_SECRETS", "at least 32"),
        ({"session_secrets": f"{GOOD},short"}, "NIXFLEET_SESSION_SECRETS", "at least 32"),
        ({"session_secrets": "x" * 40}, "NIXFLEET_SESSION_SECRETS", "placeholder"),
        ({"session_secrets": "0123456" * 6}, "NIXFLEET_SESSION_SECRETS", "placeholder"),
        ({"agent_token_hash_secret": "changeme"}, "NIXFLEET_AGENT_TOKEN_HASH_SECRET", "default"),
        ({"admin_password_hash": ""}, "NIXFLEET_ADMIN_PASSWORD_HASH", "argon2"),
        ({"require_totp": True}, "NIXFLEET_TOTP_SECRET", "missing"),
        ({"totp_secret": "not base32!"}, "NIXFLEET_TOTP_SECRET", "base32"),
    ],
)
def test_a_weak_or_missing_secret_fails_with_one_line_naming_it(overrides, key, reason):
    with pytest.raises(ConfigError) as err:
        settings(**overrides)
    message = str(err.value)
    assert "\n" not in message
    assert key in message
    assert reason in message


def test_secrets_rotate_as_a_list_from_env_or_file(monkeypatch, tmp_path):
    second = GOOD.lower() + "-second"
    monkeypatch.setenv("NIXFLEET_SESSION_SECRETS", f"{GOOD}, {second}")
    assert [s.get_secret_value() for s in settings(session_secrets=None).session_secrets] == [
        GOOD,
        second,
    ]
    monkeypatch.delenv("NIXFLEET_SESSION_SECRETS")
    path = tmp_path / "secrets"
    path.write_text(f"{second}\n{GOOD}\n")
    monkeypatch.setenv("NIXFLEET_SESSION_SECRETS_FILE", str(path))
    loaded = settings(session_secrets=None).session_secrets
    assert [s.get_secret_value() for s in loaded] == [second, GOOD]


def test_the_demo_starts_without_secrets():
    assert load_settings(demo=True).demo


def test_the_posture_names_what_is_weak_and_never_a_secret():
    lines = posture(settings(secure_cookies=False))
    text = "\n".join(line for _, line in lines)
    weak = [line for status, line in lines if status == "weak"]
    assert any("TOTP" in line for line in weak)
    assert any("cookies" in line for line in weak)
    assert GOOD not in text
    assert GOOD[::-1] not in text
    strong = posture(settings(totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", require_totp=True))
    assert [line for status, line in strong if status == "weak"] == []
