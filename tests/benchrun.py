"""Running a benchmark module as a smoke test: tiny sizes, real processes, bounded time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(module: str, tmp_path: Path, args: list[str], timeout: float) -> None:
    """Run `python -m module args` from the repository root and fail with its stderr.

    Its processes carry NIXFLEET_BENCH_SMOKE=<tmp_path's name>, so a test can check that
    the benchmark stopped everything it started.
    """
    res = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "NIXFLEET_BENCH_SMOKE": tmp_path.name},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stderr[-2000:]
