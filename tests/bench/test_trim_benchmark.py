"""The allocator benchmark (`python -m bench.trim`) as a smoke run: three agents, real processes.

Only that it completes and reads each allocator's account is asserted; the figures are for
the benchmark to measure (docs/benchmarks.md, sixth pass), never for a test.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchrun import ROOT
from conftest import pids_with_env


def _trim(tmp_path, *args: str) -> dict:
    res = subprocess.run(
        [sys.executable, "-m", "bench.trim", "--sizes", "3", "--settle", "1", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "NIXFLEET_BENCH_SMOKE": tmp_path.name},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert not pids_with_env("NIXFLEET_BENCH_SMOKE", tmp_path.name)
    return json.loads(res.stdout)["sizes"][0]


def test_the_probe_reads_every_allocator_before_and_after_each_trim(tmp_path):
    size = _trim(tmp_path, "--again", "1", "--every", "1")
    assert [r["stage"] for r in size["rows"]] == ["0 agents", "3 agents", "3 agents, 1 s later"]
    assert size["agent_failures"] == 0
    for row in size["rows"]:
        assert len(row["rss_mib"]) == 2 and min(row["rss_mib"]) > 0
        assert row["pymalloc_arenas"] > 0 and row["glibc_in_use_mib"] > 0
        assert row["sqlite_heap_mib"] > 0 and row["threads"] >= 2


def test_the_plain_run_reads_a_plain_dashboard_by_stage(tmp_path):
    size = _trim(tmp_path, "--plain")
    assert [r["stage"] for r in size["rows"]] == ["0 agents", "3 agents"]
    assert all(r["rss_mib"] > 0 for r in size["rows"])
