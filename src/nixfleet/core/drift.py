"""How a host compares with the fleet's target: what is deployed, whether it needs a reboot,
what a plan would change. Pure rules: the dashboard feeds them what agents reported."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

from nixfleet.core.framing import TIMESTAMP_MAX


class Drift(StrEnum):
    CURRENT = "current"
    BEHIND = "behind"
    UNKNOWN = "unknown"


class DeployState(StrEnum):
    CURRENT = "current"  # the running system was built from the target commit
    BEHIND = "behind"  # built from an ancestor of the target
    DIVERGED = "diverged"  # built from a commit the target does not contain (ahead or aside)
    NEVER_DEPLOYED = "never_deployed"  # no revision, and the agent never switched
    UNKNOWN = "unknown"  # a system of unknown origin, or no target to compare with
    FAILED = "failed"  # the last deploy failed, timed out or rolled back (until one succeeds)


# Results of a deploy command that leave the host "failed" until a later one succeeds.
FAILED_RESULTS = frozenset({"failed", "timed_out", "lost", "rolled_back"})


def commit_drift(host_commit: str, target_commit: str | None) -> Drift:
    """Return whether a commit matches the fleet's target commit."""
    if not host_commit or not target_commit:
        return Drift.UNKNOWN
    return Drift.CURRENT if host_commit == target_commit else Drift.BEHIND


def deploy_state(
    deployed: str,
    has_deployed: bool,
    target: str | None,
    last_result: str | None,
    is_ancestor: Callable[[str, str], bool | None],
) -> DeployState:
    """Return the host's deploy state.

    1. A last deploy that failed, timed out, was lost or rolled back wins: the operator
       must see it.
    2. No known deployed commit: never deployed when the agent never switched, else unknown.
    3. Equal to the target: current. An ancestor of it: behind. Anything else (newer, on
       another branch, unknown to the repository): diverged. Ancestry not known yet: unknown.
    """
    if last_result in FAILED_RESULTS:
        return DeployState.FAILED
    if not deployed:
        return DeployState.UNKNOWN if has_deployed else DeployState.NEVER_DEPLOYED
    if not target:
        return DeployState.UNKNOWN
    if deployed == target:
        return DeployState.CURRENT
    ancestor = is_ancestor(deployed, target)
    if ancestor is None:
        return DeployState.UNKNOWN
    return DeployState.BEHIND if ancestor else DeployState.DIVERGED


_BOOT_PARTS = (("kernel", "kernel"), ("initrd", "initrd"), ("kernel_modules", "kernel modules"))


def reboot_reason(current: Mapping[str, Any] | Any, booted: Mapping[str, Any] | Any) -> str:
    """Return why the booted system differs from current in what a reboot changes, or "".

    NixOS needs a reboot when the kernel, the initrd or the kernel modules differ (what its
    own tooling compares), not whenever the system path changes.
    """
    if not current or not booted:
        return ""

    def get(files: Mapping[str, Any] | Any, key: str) -> str:
        return str(files.get(key, "") if isinstance(files, Mapping) else getattr(files, key, ""))

    differ = [
        label
        for key, label in _BOOT_PARTS
        if get(current, key) and get(booted, key) and get(current, key) != get(booted, key)
    ]
    if not differ:
        return ""
    return " and ".join([", ".join(differ[:-1]), differ[-1]] if len(differ) > 1 else differ) + (
        " changed since boot"
    )


def reboot_state(os_kind: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """Return {"needed": bool|None, "reason": str} for a host's reported status."""
    if os_kind == "macos":
        return {"needed": None, "reason": "not applicable on macOS"}
    current, booted = status.get("current_boot"), status.get("booted_boot")
    if not current or not booted:
        return {"needed": False, "reason": "no booted system reported"}
    reason = reboot_reason(current, booted)
    return {"needed": bool(reason), "reason": reason}


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


def _version_changes(plan: Mapping[str, Any]) -> list[str]:
    """Return a plan's version changes in words, one per distinct version move.

    Packages that move between the same versions together (a kernel and its initrd) are
    one change, named after the shortest name: "linux (+ initrd-linux) 6.6.30 → 6.6.31".
    """
    moves: dict[tuple[str, str], list[str]] = {}
    for c in plan.get("changes", []):
        if c.get("from") != c.get("to"):
            moves.setdefault((c.get("from") or "∅", c.get("to") or "∅"), []).append(c["name"])
    words = []
    for (before, after), names in moves.items():
        first, *rest = sorted(names, key=lambda n: (len(n), n))
        also = f" (+ {', '.join(rest)})" if rest else ""
        words.append(f"{first}{also} {before} → {after}")
    return words


def plan_summary(plan: Mapping[str, Any]) -> str:
    """Return one line saying what a plan would change, as the dashboard shows it."""
    if not plan.get("changed"):
        return "no change"
    versions = _version_changes(plan)
    parts = []
    if versions:
        shown = ", ".join(versions[:3])
        more = f" and {len(versions) - 3} more" if len(versions) > 3 else ""
        parts.append(shown + more)
    if plan.get("restart"):
        parts.append("restarts " + ", ".join(plan["restart"][:3]))
    if plan.get("reboot"):
        parts.append("reboot needed")
    if not parts:
        parts.append("configuration only, no package changes")
    return "; ".join(parts) + f" ({_size(int(plan.get('size_delta', 0)))})"


def _size(delta: int) -> str:
    sign = "+" if delta >= 0 else "-"
    return f"{sign}{abs(delta) / 1024:.1f} KiB"


def bulk_plan_summary(plans: Iterable[Mapping[str, Any]]) -> str:
    """Return "12 hosts: 9 would change, 3 identical; linux 6.6.30 → 6.6.31 on 4"."""
    plans = list(plans)
    failed = sum(1 for p in plans if p.get("error"))
    changing = [p for p in plans if p.get("changed") and not p.get("error")]
    counts = Counter(words for p in changing for words in _version_changes(p))
    hosts = f"{len(plans)} host{'' if len(plans) == 1 else 's'}"
    same = len(plans) - len(changing) - failed
    text = f"{hosts}: {len(changing)} would change, {same} identical"
    if failed:
        text += f", {failed} failed to build"
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    common = [f"{what} on {n}" for what, n in ranked[:3]]
    reboots = sum(1 for p in changing if p.get("reboot"))
    if reboots:
        common.append(f"reboot on {reboots}")
    return text + ("; " + ", ".join(common) if common else "")
