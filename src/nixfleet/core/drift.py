"""How a host's configuration compares with the fleet's target."""

from __future__ import annotations

from enum import StrEnum


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


def lock_age_days(lock_modified: int | None, now: float) -> float | None:
    """Return the age of the flake.lock nixpkgs input in days, or None if unknown."""
    if lock_modified is None:
        return None
    return max(0.0, (now - lock_modified) / 86400)
