"""API tokens' rules: what a token's scope covers, its name and its lifetime.

A token acts with a role (never above its creator's) and, optionally, a scope: a set of
host ids, a label selector (`role=web`, as core.labels reads it: hosts matching every
term), and the command kinds it may queue. The scope bounds what the token may change;
reading follows the role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nixfleet.core.commands import CommandKind, parse_kind
from nixfleet.core.errors import Forbidden, ValidationError
from nixfleet.core.hostid import canonical_host_id
from nixfleet.core.labels import matches, parse_selector
from nixfleet.core.roles import Role

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
_DURATION = re.compile(r"^(\d{1,5})([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}
MAX_HOSTS = 1000
DEFAULT_LIFETIME_S = 90 * 86400
MAX_LIFETIME_S = 366 * 86400


@dataclass(frozen=True)
class TokenScope:
    """What a token may act on; empty parts do not narrow it."""

    hosts: frozenset[str] = field(default_factory=frozenset)
    # The parsed selector's terms: (key, value), or (key, None) for any value.
    selector: tuple[tuple[str, str | None], ...] = ()
    kinds: frozenset[CommandKind] = field(default_factory=frozenset)

    @property
    def narrowed(self) -> bool:
        return bool(self.hosts or self.selector or self.kinds)

    @property
    def by_host(self) -> bool:
        return bool(self.hosts or self.selector)

    @property
    def selector_text(self) -> str:
        return ",".join(k if v is None else f"{k}={v}" for k, v in self.selector)

    def covers_host(self, host_id: str, labels: Mapping[str, str] | None = None) -> bool:
        """Return whether the token may act on a host with these labels.

        With both a host set and a selector, a host must be in the set and match the
        selector: each part only ever narrows.
        """
        if self.hosts and host_id not in self.hosts:
            return False
        return not self.selector or matches(labels or {}, list(self.selector))

    def allows_kind(self, kind: CommandKind) -> bool:
        return not self.kinds or kind in self.kinds

    def stored(self) -> dict[str, Any]:
        """Return the scope as the database and the API show it."""
        return {
            "hosts": sorted(self.hosts),
            "labels": self.selector_text,
            "kinds": sorted(k.value for k in self.kinds),
        }

    def described(self) -> str:
        """Return the scope in words, for the CLI's table and the audit log."""
        parts = []
        if self.hosts:
            parts.append("hosts " + ",".join(sorted(self.hosts)))
        if self.selector:
            parts.append("labels " + self.selector_text)
        if self.kinds:
            parts.append("only " + ",".join(sorted(k.value for k in self.kinds)))
        return "; ".join(parts) or "any host, any command"


def scope_from(
    hosts: Iterable[str] = (), labels: str = "", kinds: Iterable[str] = ()
) -> TokenScope:
    """Return the scope named by the given parts, or raise ValidationError naming the bad one.

    labels is a selector (`role=web,tier=1`); its terms are kept sorted, so one scope has
    one spelling.
    """
    host_set = frozenset(canonical_host_id(h) for h in hosts)
    if len(host_set) > MAX_HOSTS:
        raise ValidationError(f"tokens: a scope names at most {MAX_HOSTS} hosts")
    selector = tuple(sorted(set(parse_selector(labels)), key=str)) if labels.strip() else ()
    return TokenScope(host_set, selector, frozenset(parse_kind(k) for k in kinds))


def scope_of(stored: Mapping[str, Any] | None) -> TokenScope:
    """Return the scope a database row holds (written by `TokenScope.stored`)."""
    stored = stored or {}
    return scope_from(stored.get("hosts", ()), stored.get("labels", ""), stored.get("kinds", ()))


def canonical_name(raw: str) -> str:
    """Return a token's name lower-cased, or raise ValidationError with the rule."""
    name = raw.strip().lower()
    if not _NAME.match(name):
        raise ValidationError(
            "tokens: a token's name is 1-40 letters, digits, '.', '_' or '-', starting with a"
            " letter or digit"
        )
    return name


def lifetime_s(text: str) -> int:
    """Return the seconds named by "30d", "12h" or "90m", within the longest lifetime."""
    found = _DURATION.match(text.strip().lower())
    seconds = int(found.group(1)) * _UNIT_S[found.group(2)] if found else 0
    if not 0 < seconds <= MAX_LIFETIME_S:
        raise ValidationError(
            "tokens: a lifetime is a number and m, h or d (e.g. 30d), at most 366 days"
        )
    return seconds


def check_role(role: Role, creator: Role) -> None:
    """Raise Forbidden when a token would hold a role above its creator's."""
    if role > creator:
        raise Forbidden(
            f"tokens: a token cannot hold a role above {creator.label}, its creator's role"
        )


def actor(token_id: str, owner: str | None, name: str) -> str:
    """Return how audit entries and commands name a token's caller."""
    return f"token:{token_id} of {owner}" if owner else f"token:{token_id} of service:{name}"
