"""Percentiles for latency samples, and the machine a result was measured on."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any


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


def machine() -> dict[str, Any]:
    """Return what a result needs to say about the machine it ran on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mem_total_mib": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20,
    }
