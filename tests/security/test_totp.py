"""TOTP codes: the right code maps to its time step; anything else to None."""

from __future__ import annotations

import pyotp
import pytest

from nixfleet.security import totp

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_800_000_015.0  # 15 s into step 60_000_000


def code_at(step: int) -> str:
    return pyotp.TOTP(SECRET).at(step * totp.PERIOD_S)


def test_the_current_code_gives_the_current_step():
    assert totp.matching_step(SECRET, code_at(60_000_000), NOW) == 60_000_000


@pytest.mark.parametrize("offset", [-1, 1])
def test_a_code_one_step_off_is_forgiven_and_named_by_its_own_step(offset):
    assert totp.matching_step(SECRET, code_at(60_000_000 + offset), NOW) == 60_000_000 + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_an_old_or_future_code_is_refused(offset):
    code = code_at(60_000_000 + offset)
    if code in {code_at(60_000_000 + d) for d in (-1, 0, 1)}:
        pytest.skip("codes happen to collide")
    assert totp.matching_step(SECRET, code, NOW) is None


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5x", "١٢٣٤٥٦"])
def test_malformed_codes_are_refused(code):
    assert totp.matching_step(SECRET, code, NOW) is None


def test_the_setup_uri_names_the_issuer_and_account():
    uri = totp.provisioning_uri(SECRET, "admin")
    assert uri.startswith("otpauth://totp/NixFleet:admin?")
    assert f"secret={SECRET}" in uri


def test_new_secrets_are_base32_and_distinct():
    a, b = totp.new_secret(), totp.new_secret()
    assert a != b
    assert len(a) == 32
    assert set(a) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
