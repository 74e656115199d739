"""Prometheus metrics of one dashboard process, in a registry of its own.

Security counters follow the SecurityLog; command metrics follow Fleet.finished_hooks;
gauges read the hub and the SSE broadcaster when scraped. A registry per app (not the
global one) lets several apps live in one process, as they do in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nixfleet.core.secevents import AuthFactor, EventKind, MessageFault, SecurityEvent
from nixfleet.dashboard.fleet.hub import Hub
from nixfleet.dashboard.sse import Broadcaster
from nixfleet.storage.replicas import Census

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


class _Replicas(Collector):
    """What only exists with several replicas: the bus between them, and the fleet-wide
    counts that one replica at a time (the oldest live one) reads from the database."""

    def __init__(self, hub: Hub, census: Callable[[], Census | None]) -> None:
        self.hub = hub
        self.census = census

    def collect(self) -> Iterator[Metric]:
        bus = self.hub.fleet.bus
        for name, doc in (
            ("received", "Events from other replicas delivered here."),
            ("lost", "Events that could not be journalled for other replicas."),
            ("reconnects", "Times the PostgreSQL listener reconnected."),
        ):
            value = getattr(bus, name, None)
            if value is not None:
                yield CounterMetricFamily(f"nixfleet_bus_{name}", doc, value=value)
        counts = self.census()
        if counts is None:
            return
        online = {"true" if up else "false": n for up, n in counts.hosts.items()}
        yield _gauge("nixfleet_fleet_hosts", "Hosts of the whole fleet", "online", online)
        what = "Queued and active commands of the whole fleet"
        yield _gauge("nixfleet_fleet_commands", what, "state", counts.commands)
        what = "Hosts of the whole fleet by deploy state"
        yield _gauge("nixfleet_fleet_hosts_deploy", what, "state", counts.deploy)


def _gauge(name: str, what: str, label: str, counts: Mapping[str, int]) -> GaugeMetricFamily:
    """One fleet-wide gauge with a sample per value of label."""
    family = GaugeMetricFamily(name, f"{what} (one replica reports).", labels=[label])
    for value, n in counts.items():
        family.add_metric([value], n)
    return family


class _WithReplica(Collector):
    """Every sample of the inner registry with a `replica` label."""

    def __init__(self, inner: CollectorRegistry, replica: str) -> None:
        self.inner = inner
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        for metric in self.inner.collect():
            metric.samples = [
                s._replace(labels={**s.labels, "replica": self.replica}) for s in metric.samples
            ]
            yield metric


class Metrics:
    media_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        hub: Hub,
        broadcaster: Broadcaster,
        replica: str = "",
        census: Callable[[], Census | None] = lambda: None,
    ) -> None:
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
        r.register(_Replicas(hub, census))
        self._labelled = CollectorRegistry()
        self._labelled.register(_WithReplica(r, replica))
        self.replica = replica

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
        return generate_latest(self._labelled if self.replica else self.registry)
