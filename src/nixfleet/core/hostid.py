"""The one rule for host ids, used by UI, API, CLI and agent."""

from __future__ import annotations

import re

from nixfleet.core.errors import InvalidHostId

_HOST_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def canonical_host_id(raw: str) -> str:
    """Return the canonical form of a host id or raise InvalidHostId.

    1. Trim surrounding whitespace and lowercase: "Web-01 " and "web-01" are one host.
    2. Require an RFC 1123 label: 1–63 of a-z, 0-9 and '-', not starting or ending with '-'.
    """
    candidate = raw.strip().lower()
    if not _HOST_ID.fullmatch(candidate):
        raise InvalidHostId(
            f"host id {raw[:80]!r} is not valid: use 1-63 characters a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    return candidate


def is_host_id(raw: str) -> bool:
    """Return True when raw is already a canonical host id."""
    return bool(_HOST_ID.fullmatch(raw))
