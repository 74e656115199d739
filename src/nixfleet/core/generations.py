"""Which generation a rollback may go to: one the host reported, and not the running one.

Pure rules: the dashboard checks a chosen generation against the host's last status
before anything is queued, so a typo or a stale page gets words, not a failed command.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nixfleet.core.errors import Conflict, ValidationError


def check_rollback_target(
    host_id: str, generation: int, reported: Iterable[Mapping[str, Any]]
) -> None:
    """Raise unless generation is one of the host's reported, non-running generations."""
    gens = [g for g in reported if isinstance(g.get("number"), int)]
    numbers = sorted(int(g["number"]) for g in gens)
    if not numbers:
        raise Conflict(
            f"commands: {host_id} has reported no generations yet; wait for its agent to "
            "connect, or roll back to the previous generation"
        )
    if generation not in numbers:
        raise ValidationError(
            f"commands: {host_id} has no generation {generation}; it reported {_ranges(numbers)}"
        )
    if any(g["number"] == generation and g.get("current") for g in gens):
        raise Conflict(f"commands: {host_id} already runs generation {generation}")


def _ranges(numbers: list[int]) -> str:
    """Return [1, 2, 3, 7] as "1–3 and 7"."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if n is not None:
            start = prev = n
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
