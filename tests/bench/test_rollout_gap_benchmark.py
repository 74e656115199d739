"""The rollout wave-gap benchmark (`python -m bench.rollout_gap`) as a smoke run: a tiny
rollout with real simulated agents on a real dashboard, and the engine-only mode.

Only that it completes and measures every wave boundary is asserted; how long a gap is
belongs to the benchmark (docs/benchmarks.md), never to a test.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchrun import run_bench
from conftest import pids_with_env


def _run(tmp_path: Path, *args: str) -> dict[str, object]:
    out = tmp_path / "gap.json"
    run_bench("bench.rollout_gap", tmp_path, [*args, "--out", str(out)], timeout=180)
    return dict(json.loads(out.read_text()))


def test_a_rollout_with_simulated_agents_is_timed_at_every_wave_boundary(tmp_path):
    result = _run(tmp_path, "--hosts", "6", "--wave", "2", "--run-min", "0", "--run-max", "0.1")
    agents = result["agents"]
    assert isinstance(agents, dict)
    assert agents["waves"] == 3
    assert agents["commands_received"] == 6  # one switch per host, none twice
    assert len(agents["boundaries"]) == 2
    for boundary in agents["boundaries"]:
        # The next wave is on the wire only after the last host of the one before finished.
        assert 0 < boundary["gap_ms"] <= boundary["spread_ms"]
    assert agents["agent_failures"] == []
    assert not pids_with_env("NIXFLEET_BENCH_SMOKE", tmp_path.name)


def test_the_engine_only_mode_times_one_tick_per_wave_boundary(tmp_path):
    result = _run(tmp_path, "--engine-only", "--hosts", "6", "--wave", "2")
    tick = result["engine_tick_ms"]
    assert isinstance(tick, dict)
    assert tick["max"] >= tick["median"] > 0
