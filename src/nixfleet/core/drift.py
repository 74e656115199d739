"""How a host's configuration compares with the fleet's target."""

from __future__ import annotations

import math
from enum import StrEnum

from nixfleet.core.protocol import TIMESTAMP_MAX


class Drift(StrEnum):
    CURRENT = "current"
    BEHIND = "behind"
    UNKNOWN = "unknown"


def commit_drift(host_commit: str, target_commit: str | None) -> Drift:
    """Return whether the host's config commit matches the fleet's target commit."""
    if not host_commit or not target_commit:
        return Drift.UNKNOWN
    return Drift.CURRENT if host_commit == target_commit else Drift.BEHIND


def reboot_needed(current_system: str, booted_system: str) -> bool:
    """Return True when the running kernel/system differs from the activated one."""
    return bool(current_system and booted_system and current_system != booted_system)


def lock_age_days(lock_modified: object, now: float) -> float | None:
    """Return the age of the flake.lock nixpkgs input in days, or None if unknown.

    The value comes from a host: anything but a plausible Unix time (an integer of 400
    digits, a float, NaN) is unknown, never an overflow for every reader of the host list.
    """
    if isinstance(lock_modified, bool) or not isinstance(lock_modified, int | float):
        return None
    if not (0 <= lock_modified <= TIMESTAMP_MAX) or not math.isfinite(now):
        return None
    return max(0.0, (now - float(lock_modified)) / 86400)
