"""Host labels: a small set of key=value pairs per host, for search, grouping and selection.

Two owners, like the other metadata: the operator (dashboard, CLI) and the host's own
configuration (the agent's hello). A key the host's configuration sets wins; the others
stay as the operator set them. Each owner may set at most MAX_LABELS keys, so one host
can never make the fleet table, a rollout plan or the database pay for thousands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from nixfleet.core.errors import ValidationError

MAX_LABELS = 16
# At most this many terms in one selector (`role=web,tier=1`).
MAX_SELECTOR_TERMS = 8
# Lower-case so `Role` and `role` are never two labels; dots, dashes and underscores
# inside. Values also allow capitals (a site code, a version).
KEY_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,30}[a-z0-9])?$"
VALUE_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
# Metadata fields with their own column: a label of that name would shadow them in a
# rollout's `group=` and the fleet's group-by.
RESERVED = frozenset({"location", "device_type", "os", "state"})
FROM_HOST = "host configuration"
FROM_DASHBOARD = "dashboard"

_KEY = re.compile(KEY_PATTERN)
_VALUE = re.compile(VALUE_PATTERN)


def check_key(key: str) -> str:
    """Return key if it may name a label, or raise ValidationError saying why not."""
    shown = key[:40]
    if not _KEY.match(key):
        raise ValidationError(
            f"labels: {shown!r} is not a label key: use 1 to 32 lower-case letters, digits, "
            "'.', '-' or '_', starting and ending with a letter or digit"
        )
    if key in RESERVED:
        raise ValidationError(
            f"labels: {key!r} is a host field of its own, not a label; choose another key"
        )
    return key


def check_value(key: str, value: str) -> str:
    """Return value if it may be the value of label key, or raise ValidationError."""
    if not _VALUE.match(value):
        raise ValidationError(
            f"labels: the value of {key[:40]!r} ({value[:40]!r}) is not allowed: use 1 to 63 "
            "letters, digits, '.', '-' or '_', starting and ending with a letter or digit"
        )
    return value


def check_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    """Return labels as a sorted dict of strings, or raise ValidationError naming the fault."""
    if len(labels) > MAX_LABELS:
        raise ValidationError(
            f"labels: {len(labels)} labels is too many; a host may have at most {MAX_LABELS}"
        )
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError("labels: every label key and value must be text")
        out[check_key(key)] = check_value(key, value)
    return dict(sorted(out.items()))


def parse_assignments(words: Iterable[str]) -> tuple[dict[str, str], set[str]]:
    """Return (labels to set, keys to remove) from words like `role=web` and `role-`."""
    set_: dict[str, str] = {}
    remove: set[str] = set()
    for word in words:
        key, eq, value = word.partition("=")
        if eq:
            set_[check_key(key)] = check_value(key, value)
        elif word.endswith("-"):
            remove.add(check_key(word[:-1]))
        else:
            raise ValidationError(
                f"labels: {word[:40]!r} is neither KEY=VALUE (set) nor KEY- (remove)"
            )
    if set_.keys() & remove:
        raise ValidationError("labels: a key cannot be both set and removed at once")
    return set_, remove


def parse_selector(text: str) -> list[tuple[str, str | None]]:
    """Return the terms of a selector: `role=web` (that value) or `role` (any value),
    several joined by commas, all of which a host must match."""
    terms: list[tuple[str, str | None]] = []
    words = [w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise ValidationError("labels: the label selector is empty; write KEY=VALUE or KEY")
    if len(words) > MAX_SELECTOR_TERMS:
        raise ValidationError(
            f"labels: a selector may have at most {MAX_SELECTOR_TERMS} terms, not {len(words)}"
        )
    for word in words:
        key, eq, value = word.partition("=")
        check_key(key)
        terms.append((key, check_value(key, value) if eq else None))
    return terms


def matches(labels: Mapping[str, str], terms: list[tuple[str, str | None]]) -> bool:
    """Return True if labels satisfy every term of a parsed selector."""
    return all(k in labels and (v is None or labels[k] == v) for k, v in terms)


def merged(operator: object, host: object) -> tuple[dict[str, str], dict[str, str]]:
    """Return a host's labels and who set each one, from the two owners' stored sets.

    The stored sets are read through today's rules: a label that breaks them (stored
    before a bound existed) is left out rather than breaking the host's view.
    """
    labels: dict[str, str] = {}
    sources: dict[str, str] = {}
    for owned, source in ((operator, FROM_DASHBOARD), (host, FROM_HOST)):
        if not isinstance(owned, dict):
            continue
        for key, value in list(owned.items())[:MAX_LABELS]:
            if _valid(key, value):
                labels[key] = value
                sources[key] = source
    order = sorted(labels)
    return {k: labels[k] for k in order}, {k: sources[k] for k in order}


def _valid(key: object, value: object) -> bool:
    return (
        isinstance(key, str)
        and isinstance(value, str)
        and key not in RESERVED
        and bool(_KEY.match(key))
        and bool(_VALUE.match(value))
    )
