"""Prometheus metrics of one dashboard process, in a registry of its own.

Security counters follow the SecurityLog; command metrics follow Fleet.finished_hooks;
gauges read the hub and the SSE broadcaster when scraped. A registry per app (not the
global one) lets several apps live in one process, as they do in tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from nixfleet.core.secevents import AuthFactor, EventKind, MessageFault, SecurityEvent
from nixfleet.dashboard.fleet.hub import Hub
from nixfleet.dashboard.sse import Broadcaster

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class _DroppedEvents(Collector):
    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "nixfleet_event_stream_dropped",
            "Events not delivered to a browser whose queue was full (it resyncs).",
            value=self.broadcaster.dropped,
        )


class Metrics:
    def __init__(self, hub: Hub, broadcaster: Broadcaster) -> None:
        self.registry = r = CollectorRegistry()
        self.auth_failures = Counter(
            "nixfleet_auth_failures", "Refused authentications by factor.", ["kind"], registry=r
        )
        for factor in AuthFactor:
            self.auth_failures.labels(factor.value)  # present at 0 before the first failure
        self.csrf_failures = Counter(
            "nixfleet_csrf_failures", "Requests refused by the CSRF check.", registry=r
        )
        self.rate_limited = Counter(
            "nixfleet_rate_limited", "Requests refused by a rate limit.", ["route"], registry=r
        )
        self.tls_failures = Counter(
            "nixfleet_agent_tls_failures",
            "TLS failures reported by agents.",
            ["reason"],
            registry=r,
        )
        self.agent_messages_refused = Counter(
            "nixfleet_agent_messages_refused",
            "Agent frames refused (close 4400, or 1009 when too large) by reason.",
            ["reason"],
            registry=r,
        )
        for fault in MessageFault:
            self.agent_messages_refused.labels(fault.value)
        self.commands = Counter(
            "nixfleet_commands",
            "Finished commands by kind and result.",
            ["kind", "result"],
            registry=r,
        )
        self.command_duration = Histogram(
            "nixfleet_command_duration_seconds",
            "Time from dispatch to result of finished commands.",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        agents = Gauge("nixfleet_agents_connected", "Agents connected here.", registry=r)
        agents.set_function(lambda: len(hub.links))
        streams = Gauge(
            "nixfleet_event_stream_subscribers", "Open browser event streams.", registry=r
        )
        streams.set_function(lambda: len(broadcaster.subscribers))
        r.register(_DroppedEvents(broadcaster))

    def on_security_event(self, event: SecurityEvent) -> None:
        if event.kind == EventKind.AUTH_FAILURE:
            self.auth_failures.labels(event.detail or "unknown").inc()
        elif event.kind == EventKind.CSRF_FAILURE:
            self.csrf_failures.inc()
        elif event.kind == EventKind.RATE_LIMITED:
            self.rate_limited.labels(event.detail or "unknown").inc()
        elif event.kind == EventKind.TLS_FAILURE:
            self.tls_failures.labels(event.detail or "unknown").inc()
        elif event.kind == EventKind.BAD_AGENT_MESSAGE:
            self.agent_messages_refused.labels(event.detail or "unknown").inc()

    def on_command_finished(self, cmd: dict[str, Any]) -> None:
        self.commands.labels(cmd["kind"], cmd["state"]).inc()
        began = cmd.get("started_at") or cmd.get("dispatched_at") or cmd.get("created_at")
        if began is not None and cmd.get("finished_at") is not None:
            self.command_duration.labels(cmd["kind"]).observe(max(0.0, cmd["finished_at"] - began))

    def render(self) -> bytes:
        return generate_latest(self.registry)
