"""Which address a request really comes from.

Forwarded headers are only believable from a trusted proxy. Until trusted proxies are
configured (NIXFLEET_TRUSTED_PROXIES), the direct peer is the client.
"""

from __future__ import annotations

from collections.abc import Mapping


def client_address(peer: str | None, headers: Mapping[str, str]) -> str:
    """Return the client's address for logs and rate limits ("" when unknown)."""
    del headers  # honoured only from trusted proxies; not configured here yet
    return peer or ""
