"""Signed session cookies: the cookie carries the session id plus an HMAC (itsdangerous).

The database row is still the authority (logout, expiry, "log out everywhere" delete it);
the signature lets the dashboard drop forged or tampered cookies before touching the
database, and lets an operator invalidate every cookie at once by removing a secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from itsdangerous import BadSignature, Signer

_SALT = "nixfleet.session"
SECURE_COOKIE = "__Host-nixfleet_session"
PLAIN_COOKIE = "nixfleet_session"


def cookie_name(secure: bool) -> str:
    """Return the cookie name: `__Host-` (HTTPS only, no Domain, Path=/) when secure."""
    return SECURE_COOKIE if secure else PLAIN_COOKIE


class SessionSigner:
    """Sign with the first secret; accept a signature by any of them."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("session signing needs at least one secret")
        # itsdangerous signs with the *last* key of the list and verifies with all.
        self._signer = Signer(list(reversed(secrets)), salt=_SALT, digest_method=hashlib.sha256)

    def sign(self, session_id: str) -> str:
        """Return the cookie value for session_id."""
        return self._signer.sign(session_id).decode()

    def unsign(self, cookie: str) -> str | None:
        """Return the session id in a cookie, or None when the signature does not verify."""
        try:
            return self._signer.unsign(cookie).decode()
        except (BadSignature, UnicodeError):
            return None
