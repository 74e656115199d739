"""Which role a single sign-on user gets: the provider's groups and claims, mapped.

NIXFLEET_OIDC_ROLES is a list of `MATCH=ROLE` separated by commas or whitespace. MATCH is
a group (looked up in the groups claim), or `CLAIM:VALUE` for any other claim (its value,
or one of its values when it is a list). A user matching several rules gets the highest
role; one matching none gets the default role, or is refused when there is none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from nixfleet.core.errors import ValidationError
from nixfleet.core.roles import Role

_RULE = re.compile(
    r"^(?:(?P<claim>[A-Za-z0-9_.:/-]{1,100}?):)?(?P<value>[^=\s,]{1,200})=(?P<role>\w+)$"
)


@dataclass(frozen=True)
class RoleRule:
    claim: str  # "" for the groups claim
    value: str
    role: Role


def parse_role_map(text: str) -> tuple[RoleRule, ...]:
    """Return the rules of text, or raise ValidationError naming the first bad one."""
    rules = []
    for item in (p for p in re.split(r"[\s,]+", text) if p):
        match = _RULE.match(item)
        if match is None:
            raise ValidationError(f"signon: {item[:60]!r} is not GROUP=ROLE or CLAIM:VALUE=ROLE")
        role = Role.parse(match["role"])
        rules.append(RoleRule(match["claim"] or "", match["value"], role))
    return tuple(rules)


def _values(claim: object) -> set[str]:
    """Return a claim's values as strings (a list's items, or the one value)."""
    items = claim if isinstance(claim, list) else [claim]
    found = set()
    for item in items[:1000]:  # a provider cannot make the check cost more than this
        if isinstance(item, bool):
            found.add("true" if item else "false")
        elif isinstance(item, str | int):
            found.add(str(item))
    return found


def role_for(
    claims: Mapping[str, object],
    rules: tuple[RoleRule, ...],
    groups_claim: str,
    default: Role | None = None,
) -> Role | None:
    """Return the highest role the rules give these claims, else default (None: refused)."""
    best: Role | None = None
    for rule in rules:
        if rule.value in _values(claims.get(rule.claim or groups_claim)):
            best = rule.role if best is None else max(best, rule.role)
    return best if best is not None else default
