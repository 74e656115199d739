"""CSRF: the per-session token comparison and the Origin/Referer check."""

from __future__ import annotations

from urllib.parse import urlsplit

from nixfleet.security.tokens import csrf_matches

__all__ = ["csrf_matches", "same_origin"]


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """Return False when the request says it comes from a page on another origin.

    1. Origin wins when present; browsers send it on every cross-site POST. "null"
       (sandboxed frames, some redirects, privacy modes) is another origin.
    2. Otherwise the Referer's host part.
    3. Neither header (non-browser clients, privacy extensions): the token decides alone.
    """
    source = origin or referer
    if not source:
        return True
    return bool(host) and urlsplit(source).netloc == host
