"""Opaque credentials: agent tokens, API tokens and session ids.

Tokens carry a visible prefix per kind so a leaked one is recognisable in a scanner.
Only a keyed hash is ever stored; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

AGENT_TOKEN_PREFIX = "nfa_"  # noqa: S105 - a prefix, not a secret
SESSION_PREFIX = "nfs_"
ENROLL_CODE_PREFIX = "nfe_"
API_TOKEN_PREFIX = "nft_"  # noqa: S105 - a prefix, not a secret


def new_agent_token() -> str:
    """Return a fresh agent token with 256 bits of entropy."""
    return AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_agent_token(secret: str, token: str) -> str:
    """Return HMAC-SHA256(secret, token) in hex: what the database stores.

    The hash is also the lookup key: without the secret it cannot be computed, so an
    equality search on it reveals nothing about near-miss guesses.
    """
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def new_api_token() -> str:
    """Return a fresh API token with 256 bits of entropy (stored as `hash_agent_token`)."""
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_api_token_id() -> str:
    """Return a token's public id: what lists, logs and audit entries name it by."""
    return secrets.token_hex(6)


def new_enroll_code() -> str:
    """Return a one-time enrollment code (128 bits; it lives an hour and works once)."""
    return ENROLL_CODE_PREFIX + secrets.token_urlsafe(16)


def new_session_id() -> str:
    """Return a fresh session id (the cookie value)."""
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def hash_session_id(session_id: str) -> str:
    """Return the SHA-256 of a session id: the row key, so a DB leak yields no cookie."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def new_csrf_token() -> str:
    """Return a fresh per-session CSRF token."""
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str, presented: str | None) -> bool:
    """Return True when the presented CSRF token equals the session's (constant time)."""
    return bool(presented) and hmac.compare_digest(expected, presented or "")


def new_secret() -> str:
    """Return a random secret suitable for NIXFLEET_AGENT_TOKEN_HASH_SECRET."""
    return secrets.token_urlsafe(48)
