"""The metrics of a dashboard nobody may scrape: nothing is counted.

With neither NIXFLEET_METRICS_TOKEN nor NIXFLEET_METRICS_ALLOW set, /metrics refuses every
request as disabled, so each count would be work nobody reads; prometheus_client (1.3 MiB
and 31 modules of the dashboard's resident memory) is then never imported
(docs/benchmarks.md). Settings are read once, at start: enabling metrics is a restart.
"""

from __future__ import annotations

from typing import Any

from nixfleet.core.secevents import SecurityEvent


class NoMetrics:
    """Take what `monitoring.metrics.Metrics` takes, and keep none of it."""

    media_type = "text/plain"

    def on_security_event(self, event: SecurityEvent) -> None:
        return None

    def on_command_finished(self, cmd: dict[str, Any]) -> None:
        return None

    def render(self) -> bytes:
        # routes/monitoring.py refuses a disabled /metrics before it asks for this.
        raise RuntimeError("metrics: disabled; nothing was counted")
