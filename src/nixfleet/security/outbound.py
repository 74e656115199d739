"""Outbound notifications must not become a way into the private network (SSRF)."""

from __future__ import annotations

import ipaddress
import socket


def private_address(host: str, port: int | None) -> str | None:
    """Return the first private, loopback or link-local address host resolves to, or None.

    A name that does not resolve returns None: the sender fails on its own, and for cloud
    services the "host" of an Apprise URL is often a token, not a name we should look up.
    Checked right before each send, so a DNS answer changed since start-up is caught too
    (a rebinding race inside the send itself remains; see docs/monitoring.md).
    """
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            return str(ip)
    return None
