"""The agent's connection to the dashboard: TLS, pins, backoff and the circuit breaker.

An agent runs as root and obeys the dashboard, so the channel is strict: only the
configured CA (or pins) are trusted, the pin is checked before the first application
byte (the HTTP upgrade that carries the token) is written, and a dashboard that is down
or refuses us is retried on a schedule that cannot turn a fleet into a flood.

Failures feed two mechanisms:
- `Backoff` spaces attempts (full jitter, floor, cap); auth refusals climb faster and
  never wait less than half the ceiling, so a fleet with a revoked token stays quiet.
- `Breaker` counts consecutive failed dials; once open, only one probe per probe
  interval is made (half-open); the probe's success closes it. Only the changes of
  state are logged, not every failure.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nixfleet.core.errors import ConfigError
from nixfleet.core.framing import AUTH_CLOSE_CODES, CLOSE_BAD_MESSAGE, MAX_MESSAGE_BYTES
from nixfleet.core.wire import TLSFailureReport, TransportReport
from nixfleet.security.tls import TLSFailure, check_pin, classify, client_context

log = logging.getLogger("nixfleet.agent.transport")
# How long a ping may wait for its pong before the agent gives the link up. Longer than the
# minute for which the dashboard, its database busy, holds back reading this socket while it
# retries storing the last message (routes/agent_ws.py): the pong waits behind it unread. A
# dashboard that is really gone usually closes the connection (a killed process, a restart);
# only a vanished machine or network takes the full 20 s + 75 s to notice.
PONG_WAIT_S = 75.0
_YEAR_S = 366 * 86400  # the bound of TransportReport.down_s: a longer outage reports a year

Clock = Callable[[], float]
Uniform = Callable[[float, float], float]


@dataclass(frozen=True)
class TransportOptions:
    ca_file: Path | None = None
    pins: frozenset[str] = frozenset()
    min_tls: str = "1.2"
    allow_insecure: bool = False
    client_cert: Path | None = None
    client_key: Path | None = None
    backoff_floor_s: float = 1.0
    backoff_cap_s: float = 300.0
    breaker_threshold: int = 5
    probe_interval_s: float = 60.0
    stable_after_s: float = 30.0
    open_timeout_s: float = 10.0


class Backoff:
    """Return growing delays with full jitter between a floor and a cap."""

    def __init__(self, floor: float, cap: float, uniform: Uniform = random.uniform) -> None:
        self.floor, self.cap, self.attempt = floor, cap, 0
        self.uniform = uniform

    def next_delay(self, auth_failure: bool = False) -> float:
        """Return the wait before the next attempt.

        1. Each failure doubles the ceiling (an auth failure multiplies it by eight).
        2. Network errors wait floor + a uniform share of the ceiling (full jitter).
        3. Auth failures wait at least half the ceiling: retrying sooner cannot help.
        """
        self.attempt += 3 if auth_failure else 1
        ceiling = min(self.cap, self.floor * 2 ** min(self.attempt, 60))
        low = ceiling / 2 if auth_failure else 0.0
        return min(self.cap, self.floor + self.uniform(low, ceiling))

    def reset(self) -> None:
        self.attempt = 0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """closed → (threshold failures) open → (probe interval) half-open → closed | open."""

    def __init__(
        self,
        threshold: int,
        probe_interval: float,
        clock: Clock = time.monotonic,
        uniform: Uniform = random.uniform,
    ) -> None:
        self.threshold, self.probe_interval = threshold, probe_interval
        self.clock, self.uniform = clock, uniform
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probe_at = 0.0

    def before_attempt(self) -> BreakerState:
        """Return the state the coming attempt is made in (open turns half-open)."""
        if self.state == BreakerState.OPEN and self.clock() >= self.probe_at:
            self._move(BreakerState.HALF_OPEN, "one probe to the dashboard")
        return self.state

    def failure(self) -> None:
        self.failures += 1
        if self.state == BreakerState.HALF_OPEN or (
            self.state == BreakerState.CLOSED and self.failures >= self.threshold
        ):
            self._open()

    def success(self) -> None:
        if self.state != BreakerState.CLOSED:
            self._move(BreakerState.CLOSED, f"dashboard back after {self.failures} failed dials")
        self.failures = 0

    def wait(self) -> float:
        """Return how long to wait before the next probe (0 unless open)."""
        if self.state != BreakerState.OPEN:
            return 0.0
        return max(0.0, self.probe_at - self.clock())

    def _open(self) -> None:
        now = self.clock()
        if self.state == BreakerState.CLOSED:
            self.opened_at = now
        # Jitter in the second half of the interval: a fleet whose dashboard comes back
        # returns within one interval, but not all in the same second.
        self.probe_at = now + self.uniform(self.probe_interval / 2, self.probe_interval)
        self._move(
            BreakerState.OPEN,
            f"{self.failures} failed dials; probing every {self.probe_interval:g} s",
        )

    def _move(self, new: BreakerState, why: str) -> None:
        if new == self.state:
            return
        # Opening is news; a probe starting is routine; recovery or a failed probe is info.
        level = {BreakerState.OPEN: logging.INFO, BreakerState.HALF_OPEN: logging.DEBUG}.get(
            new, logging.INFO
        )
        if self.state == BreakerState.CLOSED:
            level = logging.WARNING
        log.log(level, "agent: circuit breaker %s → %s (%s)", self.state, new, why)
        self.state = new


@dataclass
class _TLSCount:
    count: int = 0
    last_at: float = 0.0


@dataclass
class TLSFailureLog:
    """Handshake failures since the last good connection, by kind."""

    clock: Clock = time.monotonic
    kinds: dict[TLSFailure, _TLSCount] = field(default_factory=dict)

    def add(self, kind: TLSFailure) -> int:
        entry = self.kinds.setdefault(kind, _TLSCount())
        entry.count += 1
        entry.last_at = self.clock()
        return entry.count

    def report(self) -> list[TLSFailureReport]:
        now = self.clock()
        return [
            TLSFailureReport(kind=k.value, count=v.count, age_s=round(max(0, now - v.last_at), 1))
            for k, v in self.kinds.items()
        ]

    def clear(self) -> None:
        self.kinds.clear()


class _PinnedConnection(ClientConnection):
    """A client connection that checks the pins before it writes the upgrade request."""

    pins: frozenset[str] = frozenset()

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        # asyncio calls connection_made only after the TLS handshake has completed, and
        # handshake() is where websockets writes its first byte: the request with the token.
        ssl_object = self.transport.get_extra_info("ssl_object")
        check_pin(ssl_object.getpeercert(binary_form=True) if ssl_object else None, self.pins)
        await super().handshake(*args, **kwargs)


def ws_url(url: str, allow_insecure: bool) -> str:
    """Return the agent WebSocket URL for a dashboard URL, refusing plain text unless allowed."""
    scheme = urlsplit(url).scheme
    if scheme not in ("https", "wss", "http", "ws"):
        raise ConfigError(f"agent: --url must be https:// (got {url!r})")
    if scheme in ("http", "ws") and not allow_insecure:
        raise ConfigError("agent: refusing a plain-text URL; use https/wss or --allow-insecure")
    secure = "wss" if scheme in ("https", "wss") else "ws"
    return secure + url[len(scheme) :].rstrip("/") + "/api/agent/ws"


class Transport:
    """Dial the dashboard and decide, after each failure, how long to wait."""

    def __init__(
        self,
        url: str,
        opts: TransportOptions,
        clock: Clock = time.monotonic,
        uniform: Uniform = random.uniform,
    ) -> None:
        self.opts = opts
        self.url = ws_url(url, opts.allow_insecure)
        self.secure = self.url.startswith("wss://")
        if not self.secure and (opts.pins or opts.ca_file or opts.client_cert):
            raise ConfigError("agent: --pin, --ca-file and --client-cert need an https:// URL")
        self.ssl = (
            client_context(opts.ca_file, opts.min_tls, opts.client_cert, opts.client_key)
            if self.secure
            else None
        )
        self.clock = clock
        self.backoff = Backoff(opts.backoff_floor_s, opts.backoff_cap_s, uniform)
        self.breaker = Breaker(opts.breaker_threshold, opts.probe_interval_s, clock, uniform)
        self.tls_failures = TLSFailureLog(clock)
        self.attempt_state = BreakerState.CLOSED
        self.failed_attempts = 0
        self.down_since: float | None = None
        self.connected_at: float | None = None

    def dial(self, headers: dict[str, str]) -> connect:
        """Return the websockets connector (an async context manager) for one attempt."""
        self.attempt_state = self.breaker.before_attempt()
        self.connected_at = None
        pinned = type("PinnedConnection", (_PinnedConnection,), {"pins": self.opts.pins})
        extra: dict[str, Any] = {"ssl": self.ssl} if self.ssl is not None else {}
        return connect(
            self.url,
            additional_headers=headers,
            open_timeout=self.opts.open_timeout_s,
            max_size=MAX_MESSAGE_BYTES,
            ping_interval=20,
            ping_timeout=PONG_WAIT_S,
            create_connection=pinned,
            proxy=None,
            **extra,
        )

    def report(self) -> TransportReport:
        """Return what the next hello tells the dashboard about the way here."""
        down = 0.0 if self.down_since is None else self.clock() - self.down_since
        return TransportReport(
            breaker=self.attempt_state.value,
            failed_attempts=self.failed_attempts,
            down_s=round(min(down, _YEAR_S), 1),
            tls_failures=self.tls_failures.report(),
        )

    def established(self) -> None:
        """The dashboard welcomed us: close the breaker, forget the outage."""
        self.breaker.success()
        self.tls_failures.clear()
        self.failed_attempts = 0
        self.down_since = None
        self.connected_at = self.clock()

    def failed(self, exc: BaseException) -> float:
        """Return the wait before the next attempt after exc ended one (or a session)."""
        was_up = self.connected_at is not None
        if was_up and self.clock() - (self.connected_at or 0) >= self.opts.stable_after_s:
            self.backoff.reset()
        self.connected_at = None
        auth = _is_auth_failure(exc)
        if not was_up:
            self.failed_attempts += 1
            if self.down_since is None:
                self.down_since = self.clock()
            if auth:
                # A refused token proves the dashboard is up: only the backoff applies.
                self.breaker.success()
            else:
                self.breaker.failure()
        delay = self.backoff.next_delay(auth)
        if self.breaker.state == BreakerState.OPEN:
            # Open, the probe schedule rules: a dashboard that comes back is found within
            # one probe interval, however far the backoff has climbed.
            delay = self.breaker.wait()
        self._log_failure(exc, delay)
        return delay

    def _log_failure(self, exc: BaseException, delay: float) -> None:
        kind = classify(exc)
        if kind is not None:
            n = self.tls_failures.add(kind)
            log.warning(
                "agent: TLS failure: %s (%d so far): %s",
                kind.value,
                n,
                _short(exc),
            )
            return
        quiet = self.breaker.state == BreakerState.OPEN and self.failed_attempts > 1
        if isinstance(exc, InvalidStatus):
            log.warning(
                "agent: dashboard refused the connection: HTTP %s; retry in %.1f s",
                exc.response.status_code,
                delay,
            )
        elif isinstance(exc, ConnectionClosed):
            reason = exc.rcvd.reason if exc.rcvd else "no close frame"
            code = exc.rcvd.code if exc.rcvd else None
            # A refused message is a bug on one side or the other: worth a warning.
            level = logging.WARNING if code in (CLOSE_BAD_MESSAGE, 1009) else logging.INFO
            log.log(level, "agent: connection closed (%s %r)", code, reason)
        elif not quiet:
            log.info("agent: cannot reach dashboard: %s; retry in %.1f s", _short(exc), delay)


def _is_auth_failure(exc: BaseException) -> bool:
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code in (401, 403)
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
        return exc.rcvd.code in AUTH_CLOSE_CODES
    return False


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"


def peer_certificate(host: str, port: int, timeout: float = 10) -> bytes:
    """Return the DER certificate a TLS server presents, without verifying it.

    For `nixfleet admin spki-pin HOST:PORT`: the operator compares the printed pin
    out of band, which is the point of pinning.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ConfigError(f"admin: {host}:{port} presented no certificate")
    return der
