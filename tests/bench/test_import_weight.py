"""Optional libraries stay out of processes that do not use them (docs/benchmarks.md, Memory).

Each costs the user resident memory on every host or dashboard: httpx pulls in rich, pygments
and click; cryptography, apprise and psycopg are only needed when pinning, alerting or on
PostgreSQL; Jinja only for a page, which agents and API callers never ask for. The benchmark
script itself must keep working (it is how the figures are made).
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.memory import measure


def _loaded(module: str, candidates: tuple[str, ...]) -> list[str]:
    code = (
        f"import json, sys, {module}\n"
        f"print(json.dumps([m for m in {list(candidates)!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def test_the_agent_does_not_load_what_only_enrollment_or_pinning_needs() -> None:
    assert _loaded("nixfleet.agent.daemon", ("httpx", "rich", "pygments", "cryptography")) == []


def test_the_agent_reads_its_options_and_messages_without_pydantic() -> None:
    weights = ("pydantic", "pydantic_core", "pydantic_settings", "annotated_types")
    for module in ("nixfleet.agent.daemon", "nixfleet.cli.agent"):
        assert _loaded(module, weights) == []


def test_the_command_line_loads_httpx_only_when_ctl_talks_to_a_dashboard() -> None:
    assert _loaded("nixfleet.cli.main", ("httpx",)) == []


def test_a_sqlite_dashboard_without_alert_channels_loads_neither_apprise_nor_psycopg() -> None:
    assert _loaded("nixfleet.dashboard.app", ("apprise", "psycopg")) == []


def test_the_dashboard_loads_jinja_only_to_render_a_page() -> None:
    assert _loaded("nixfleet.dashboard.app", ("jinja2",)) == []


def test_the_memory_benchmark_reports_rss_and_a_breakdown() -> None:
    res = measure("nixfleet.agent.daemon")
    heap = res["heap_by_package"]
    assert isinstance(heap, dict) and heap.get("websockets", 0) > 0
    assert isinstance(res["rss_kib"], int) and res["rss_kib"] > 0
