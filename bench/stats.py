"""Percentiles for latency samples."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100), linear between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(seconds: list[float]) -> dict[str, float | int | None]:
    """Return count, p50, p99 and max in milliseconds (None when there are no samples)."""
    if not seconds:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50": round(percentile(ms, 50), 1),
        "p99": round(percentile(ms, 99), 1),
        "max": round(max(ms), 1),
    }
