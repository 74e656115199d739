"""Who may read /metrics: a bearer token, an address list, or both (then both must pass)."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def refusal(
    token: str, networks: Sequence[Network], address: str, authorization: str | None
) -> str | None:
    """Return why a scrape is refused ("disabled", "address", "token"), or None to allow."""
    if not token and not networks:
        return "disabled"
    if networks and not _address_in(address, networks):
        return "address"
    if token:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            return "token"
    return None


def _address_in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
