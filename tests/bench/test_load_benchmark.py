"""The load benchmark (`python -m bench`) as a smoke run: tiny sizes, real processes.

Only that it completes and produces numbers is asserted; how fast is for the benchmark
itself to measure (docs/benchmarks.md), never for a test.
"""

from __future__ import annotations

import json

from benchrun import run_bench
from conftest import pids_with_env


def test_the_quick_profile_runs_to_the_end_and_writes_numbers(tmp_path):
    args = [
        "--sizes", "4", "--commands", "8", "--idle-s", "0.5", "--browsers", "2",
        "--mixed-hosts", "4", "--loops", "2", "--ingest-s", "1", "--output-lines", "5",
        "--name", "smoke", "--out-dir", str(tmp_path),
    ]  # fmt: skip
    run_bench("bench", tmp_path, args, timeout=120)
    result = json.loads((tmp_path / "smoke.json").read_text())
    size = result["sizes"][0]
    assert size["n"] == 4
    assert size["dispatch"]["latency_ms"]["count"] == 8
    assert size["dispatch"]["errors"] == 0
    assert size["bulk"]["delivered"] == 4
    assert size["capacity"]["rss_mib"] > 0
    output = result["mixed"]["output"][0]
    assert output["complete_lines"] == 5
    assert output["to_every_browser_ms"]["p99"] is not None
    assert result["mixed"]["ingest"][0]["statuses_per_s"] > 0
    assert "| N agents |" in (tmp_path / "smoke.md").read_text()
    # The benchmark stops the dashboard it started.
    assert not pids_with_env("NIXFLEET_BENCH_SMOKE", tmp_path.name)
