"""Which address a request really comes from, and whether the browser used HTTPS.

Forwarded headers are only believable from a trusted proxy (NIXFLEET_TRUSTED_PROXIES).
Anyone can send `X-Forwarded-For: 1.2.3.4`; what a client cannot do is stop the proxies
in front of us from appending the address they saw. So the chain is read from the right
(nearest hop) to the left, skipping our own trusted proxies, and the first address that is
not ours is the client. Taking the left-most entry instead lets a client choose its own
address and dodge rate limits.

Precedence when the peer is trusted: `Forwarded` (RFC 7239), else `X-Forwarded-For`,
else `X-Real-IP`. Without trusted proxies, every header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    """Return the IP in a header node ("1.2.3.4", "1.2.3.4:80", "[::1]:80", "::1"), or None."""
    node = text.strip().strip('"').strip()
    if node.startswith("["):
        node = node[1:].partition("]")[0]
    elif node.count(":") == 1:  # IPv4 with a port; a bare IPv6 has several colons
        node = node.partition(":")[0]
    try:
        ip = ipaddress.ip_address(node.partition("%")[0])
    except ValueError:
        return None
    # An IPv4-mapped IPv6 peer (::ffff:10.0.0.1) is the IPv4 host for matching and keys.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Address | None, trusted: Sequence[Network]) -> bool:
    return ip is not None and any(ip.version == n.version and ip in n for n in trusted)


def _forwarded_elements(value: str) -> list[dict[str, str]]:
    """Return the RFC 7239 elements of a Forwarded header as lowercase-keyed dicts."""
    elements = []
    for element in value.split(","):
        pairs: dict[str, str] = {}
        for pair in element.split(";"):
            key, sep, val = pair.partition("=")
            if sep:
                pairs[key.strip().lower()] = val.strip().strip('"')
        elements.append(pairs)
    return elements


def _header(headers: Mapping[str, str], name: str) -> str:
    """Return one header, several lines of it joined with commas (as RFC 9110 allows)."""
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return ", ".join(getlist(name))
    return headers.get(name) or ""


@dataclass(frozen=True)
class Origin:
    """Where a request came from: the client address, the scheme it used ("" unknown),
    and whether the direct peer is a trusted proxy (whose other headers are believable)."""

    address: str
    proto: str = ""
    via_proxy: bool = False


def resolve(peer: str | None, headers: Mapping[str, str], trusted: Sequence[Network]) -> Origin:
    """Return the request's real origin.

    1. An untrusted (or unknown) peer is the client; its headers are ignored.
    2. Read the hops from the first header present (Forwarded, X-Forwarded-For, X-Real-IP);
       the peer is the right-most hop.
    3. Walk from the right, skipping trusted hops; the first untrusted hop is the client.
       An entry that is not an address ends the walk at the hop to its right, the last
       one a trusted proxy vouched for. If every hop is trusted, the left-most is the client.
    """
    peer_ip = _address(peer or "")
    if peer_ip is None or not _trusted(peer_ip, trusted):
        return Origin(str(peer_ip) if peer_ip else (peer or ""))
    protos: list[str] = []
    forwarded = _header(headers, "forwarded")
    if forwarded:
        elements = _forwarded_elements(forwarded)
        hops = [e.get("for", "") for e in elements]
        protos = [e.get("proto", "").lower() for e in elements]
    elif xff := _header(headers, "x-forwarded-for"):
        hops = xff.split(",")
    else:
        hops = [_header(headers, "x-real-ip")] if _header(headers, "x-real-ip") else []
    client: Address = peer_ip
    used = -1
    for index in range(len(hops) - 1, -1, -1):
        if not _trusted(client, trusted):
            break
        hop = _address(hops[index])
        if hop is None:
            break
        client, used = hop, index
    if forwarded:
        proto = protos[used] if used >= 0 else ""
    else:
        # Proxies overwrite X-Forwarded-Proto rather than append; if a list came through,
        # the left-most entry is what the edge proxy saw from the browser.
        proto = _header(headers, "x-forwarded-proto").split(",")[0].strip().lower()
    return Origin(str(client), proto, via_proxy=True)


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted: Sequence[Network] = ()
) -> str:
    """Return the client's address for logs and rate limits ("" when unknown)."""
    return resolve(peer, headers, trusted).address
