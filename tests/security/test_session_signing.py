"""Session cookies are signed: the first secret signs, every listed secret verifies."""

from __future__ import annotations

import pytest

from nixfleet.security.sessions import SessionSigner, cookie_name

OLD, NEW = "o" * 16 + "ld-secret-0123456789", "n" * 16 + "ew-secret-0123456789"


def test_a_cookie_signed_with_the_old_secret_survives_a_rotation():
    cookie = SessionSigner([OLD]).sign("nfs_abc")
    assert SessionSigner([NEW, OLD]).unsign(cookie) == "nfs_abc"


def test_after_a_rotation_new_cookies_are_signed_with_the_first_secret():
    cookie = SessionSigner([NEW, OLD]).sign("nfs_abc")
    assert SessionSigner([NEW]).unsign(cookie) == "nfs_abc"
    assert SessionSigner([OLD]).unsign(cookie) is None


def test_a_cookie_signed_with_a_removed_secret_is_refused():
    cookie = SessionSigner([OLD]).sign("nfs_abc")
    assert SessionSigner([NEW]).unsign(cookie) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c.replace("nfs_abc", "nfs_abd"),
        lambda c: c[:-5] + ("A" if c[-5] != "A" else "B") + c[-4:],
        lambda c: c.split(".")[0],
        lambda c: "nfs_abc.",
        lambda c: "",
        lambda c: "\udcff.x",
    ],
)
def test_a_tampered_cookie_is_refused(tamper):
    signer = SessionSigner([NEW])
    assert signer.unsign(tamper(signer.sign("nfs_abc"))) is None


def test_the_cookie_is_host_prefixed_only_over_https():
    assert cookie_name(secure=True) == "__Host-nixfleet_session"
    assert cookie_name(secure=False) == "nixfleet_session"


def test_signing_needs_a_secret():
    with pytest.raises(ValueError):
        SessionSigner([])
