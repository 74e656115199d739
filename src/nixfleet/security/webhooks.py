"""Forge push webhooks: each forge's way of proving a delivery is its own, and its names.

GitHub signs the raw body with HMAC-SHA256 (`X-Hub-Signature-256: sha256=<hex>`),
Forgejo and Gitea do the same without the prefix (`X-Forgejo-Signature`,
`X-Gitea-Signature`), GitLab sends the shared secret itself (`X-Gitlab-Token`). Pure
functions; every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Forge(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    FORGEJO = "forgejo"  # also Gitea: the same payload and signature


@dataclass(frozen=True)
class ForgeHeaders:
    event: tuple[str, ...]
    delivery: tuple[str, ...]
    push_event: str
    ping_event: str


HEADERS = {
    Forge.GITHUB: ForgeHeaders(("x-github-event",), ("x-github-delivery",), "push", "ping"),
    Forge.GITLAB: ForgeHeaders(
        ("x-gitlab-event",), ("x-gitlab-event-uuid", "idempotency-key"), "Push Hook", ""
    ),
    Forge.FORGEJO: ForgeHeaders(
        ("x-forgejo-event", "x-gitea-event"),
        ("x-forgejo-delivery", "x-gitea-delivery"),
        "push",
        "",
    ),
}


def forge_named(name: str) -> Forge | None:
    """Return the forge a URL names (`gitea` is Forgejo's format), or None."""
    if name == "gitea":
        return Forge.FORGEJO
    try:
        return Forge(name)
    except ValueError:
        return None


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> str:
    return next((headers[n] for n in names if headers.get(n)), "")


def event_of(forge: Forge, headers: Mapping[str, str]) -> str:
    return _first(headers, HEADERS[forge].event)[:60]


def delivery_of(forge: Forge, headers: Mapping[str, str]) -> str:
    return _first(headers, HEADERS[forge].delivery)


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(forge: Forge, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Return True when the delivery proves knowledge of secret (over the raw body)."""
    if not secret:
        return False
    if forge == Forge.GITLAB:
        return hmac.compare_digest(headers.get("x-gitlab-token", "").encode(), secret.encode())
    if forge == Forge.GITHUB:
        given = headers.get("x-hub-signature-256", "")
        return hmac.compare_digest(given.encode(), f"sha256={_hmac_hex(secret, body)}".encode())
    given = headers.get("x-forgejo-signature") or headers.get("x-gitea-signature") or ""
    return hmac.compare_digest(given.lower().encode(), _hmac_hex(secret, body).encode())


def sign(forge: Forge, body: bytes, secret: str) -> dict[str, str]:
    """Return the headers a forge would send for body (tests and `nixfleet` docs use it)."""
    if forge == Forge.GITLAB:
        return {"X-Gitlab-Token": secret}
    if forge == Forge.GITHUB:
        return {"X-Hub-Signature-256": f"sha256={_hmac_hex(secret, body)}"}
    return {"X-Forgejo-Signature": _hmac_hex(secret, body)}
