"""`python -m bench.gcprobe OUT ARGS…`: run `nixfleet ARGS…` and log every garbage collection.

The load benchmark starts the dashboard through this when asked (`--gc-probe`): each
collection's generation, duration and what it collected are kept in memory (a callback
that wrote a file would add to the pause it measures) and written to OUT as JSON when the
process exits (SIGTERM from the benchmark included), with the interpreter's thresholds.

With BENCH_TRACEMALLOC=N in its environment it also traces allocations, keeping N frames of
each one's traceback, and each SIGUSR1 writes a tracemalloc snapshot to OUT.<n>.snap
(bench/connmem.py compares two of them).

With BENCH_PROFILE=1, the first SIGUSR2 starts cProfile on the event loop's thread and the
second stops it and writes OUT.prof (pstats): exact call counts per phase, where py-spy's
samples are too few to tell one statement's cost from another's.
"""

from __future__ import annotations

import atexit
import cProfile
import gc
import json
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

_started: list[float] = [0.0]
_pauses: list[tuple[float, int, float, int]] = []  # (monotonic at end, gen, ms, collected)


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    now = time.perf_counter()
    if phase == "start":
        _started[0] = now
        return
    _pauses.append(
        (time.monotonic(), info["generation"], (now - _started[0]) * 1000, info["collected"])
    )


def main() -> None:
    out = Path(sys.argv[1])

    def dump() -> None:
        data = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
        data["pauses"] = [[round(a, 3), g, round(ms, 2), c] for a, g, ms, c in _pauses]
        out.write_text(json.dumps(data) + "\n")

    atexit.register(dump)
    # uvicorn shuts down cleanly on SIGTERM, then raises it again under the handler it found:
    # this one exits normally, so atexit runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    gc.callbacks.append(_on_gc)
    frames = int(os.environ.get("BENCH_TRACEMALLOC") or 0)
    if frames > 0:
        tracemalloc.start(frames)
        taken = [0]

        def snapshot(*_: object) -> None:
            taken[0] += 1
            tracemalloc.take_snapshot().dump(f"{out}.{taken[0]}.snap")

        signal.signal(signal.SIGUSR1, snapshot)
    if os.environ.get("BENCH_PROFILE") == "1":
        _profile_on_sigusr2(out)
    sys.argv = ["nixfleet", *sys.argv[2:]]
    from nixfleet.cli.main import main as nixfleet

    nixfleet()


def _profile_on_sigusr2(out: Path) -> None:
    profiler = cProfile.Profile()
    running = [False]

    def toggle(*_: object) -> None:
        if running[0]:
            profiler.disable()
            profiler.dump_stats(f"{out}.prof")
        else:
            profiler.enable()
        running[0] = not running[0]

    signal.signal(signal.SIGUSR2, toggle)


def summary(path: Path, since: float, until: float) -> dict[str, Any]:
    """Return the collections between two monotonic times: count, total and max per generation."""
    data = json.loads(path.read_text())
    out: dict[str, Any] = {"threshold": data["threshold"], "frozen_at_exit": data["frozen"]}
    for gen in (0, 1, 2):
        ms = [p[2] for p in data["pauses"] if p[1] == gen and since <= p[0] <= until]
        out[f"gen{gen}"] = {
            "count": len(ms),
            "total_ms": round(sum(ms), 1),
            "max_ms": round(max(ms), 1) if ms else 0.0,
        }
    return out


if __name__ == "__main__":
    main()
