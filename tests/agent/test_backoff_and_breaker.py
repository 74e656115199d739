"""Backoff, circuit breaker and command bucket, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import logging
import ssl

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from nixfleet.agent.ratelimit import TokenBucket, parse_rate
from nixfleet.agent.transport import Backoff, Breaker, Transport, TransportOptions
from nixfleet.core.errors import ConfigError
from nixfleet.security.tls import PinMismatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _high(low: float, high: float) -> float:
    return high


def _low(low: float, high: float) -> float:
    return low


def _http(status: int) -> InvalidStatus:
    return InvalidStatus(Response(status, "", Headers()))


def test_backoff_grows_to_the_cap_and_never_beyond():
    b = Backoff(1.0, 300.0, _high)
    delays = [b.next_delay() for _ in range(20)]
    assert delays[:3] == [3.0, 5.0, 9.0]
    assert max(delays) == 300.0
    assert delays == sorted(delays)


def test_backoff_jitter_is_full_between_floor_and_ceiling():
    b = Backoff(1.0, 300.0, _low)
    assert [b.next_delay() for _ in range(5)] == [1.0] * 5


def test_auth_failures_back_off_harder_and_never_below_half_the_ceiling():
    net, auth = Backoff(1.0, 300.0, _low), Backoff(1.0, 300.0, _low)
    assert auth.next_delay(auth_failure=True) == 1.0 + 4.0  # half of 8 x floor
    assert auth.next_delay(auth_failure=True) == 1.0 + 32.0
    assert net.next_delay() == 1.0
    assert min(auth.next_delay(True) for _ in range(10)) >= 150.0


def test_backoff_resets_after_a_stable_connection():
    clock = Clock()
    t = Transport(
        "http://dash", TransportOptions(allow_insecure=True, stable_after_s=30), clock, _high
    )
    for _ in range(6):
        t.failed(OSError("refused"))
    t.established()
    clock.now += 31
    assert t.failed(ConnectionError("dropped")) == 3.0  # back at the first step


def test_the_breaker_opens_probes_once_per_interval_and_closes_on_success(caplog):
    caplog.set_level(logging.DEBUG, "nixfleet.agent.transport")
    clock = Clock()
    br = Breaker(threshold=3, probe_interval=60, clock=clock, uniform=_high)
    for _ in range(2):
        br.failure()
    assert br.before_attempt() == "closed"
    br.failure()
    assert (br.state, br.wait()) == ("open", 60)
    clock.now += 59
    assert br.before_attempt() == "open"  # no attempt before the probe is due
    clock.now += 1
    assert br.before_attempt() == "half_open"
    br.failure()  # the probe failed: open again for a full interval
    assert (br.state, br.wait()) == ("open", 60)
    clock.now += 60
    assert br.before_attempt() == "half_open"
    br.success()
    assert br.state == "closed"
    changes = [r.getMessage() for r in caplog.records if "circuit breaker" in r.getMessage()]
    assert len(changes) == 5  # closed→open, open→half, half→open, open→half, half→closed
    assert "closed → open" in changes[0] and "half_open → closed" in changes[-1]


def test_failures_while_open_are_not_logged_one_by_one(caplog):
    caplog.set_level(logging.INFO, "nixfleet.agent.transport")
    clock = Clock()
    opts = TransportOptions(allow_insecure=True, breaker_threshold=2, probe_interval_s=10)
    t = Transport("http://dash", opts, clock, _high)
    for _ in range(30):
        t.dial({})
        t.failed(OSError("refused"))
        clock.now += t.breaker.wait() or 1
    lines = [r.getMessage() for r in caplog.records]
    assert sum("cannot reach" in line for line in lines) <= 2
    assert sum("closed → open" in line for line in lines) == 1


def test_once_open_the_agent_waits_at_most_one_probe_interval():
    clock = Clock()
    opts = TransportOptions(
        allow_insecure=True, breaker_threshold=2, probe_interval_s=10, backoff_cap_s=300
    )
    t = Transport("http://dash", opts, clock, _high)
    delays = []
    for _ in range(12):
        t.dial({})
        delays.append(t.failed(OSError("refused")))
        clock.now += delays[-1]
    assert max(delays[2:]) <= 10  # the backoff alone would be at 300 s by now
    assert t.breaker.state in ("open", "half_open")
    t.dial({})
    t.established()
    report = t.report()
    assert (report.breaker, report.failed_attempts) == ("half_open", 0)


def test_a_refused_token_does_not_open_the_breaker_but_backs_off_hard():
    clock = Clock()
    opts = TransportOptions(allow_insecure=True, breaker_threshold=2, backoff_cap_s=300)
    t = Transport("http://dash", opts, clock, _low)
    delays = [t.failed(_http(401)) for _ in range(4)]
    assert t.breaker.state == "closed"
    assert delays[0] >= 4.0 and delays[-1] >= 150.0


def test_tls_failures_are_counted_by_kind_and_reported_with_their_age():
    clock = Clock()
    t = Transport("https://dash", TransportOptions(), clock, _low)
    for _ in range(3):
        t.dial({})
        t.failed(PinMismatch("no pin matches"))
        clock.now += 5
    t.failed(ssl.SSLCertVerificationError("x"))
    report = t.report()
    kinds = {f.kind: (f.count, f.age_s) for f in report.tls_failures}
    assert kinds["pin_mismatch"] == (3, 5.0)
    assert report.failed_attempts == 4 and report.down_s == 15.0
    t.established()
    assert t.report().tls_failures == []


@pytest.mark.parametrize(
    ("url", "flags"),
    [
        ("http://dash", {}),
        ("ws://dash", {}),
        ("ftp://dash", {"allow_insecure": True}),
        ("http://dash", {"allow_insecure": True, "pins": frozenset({"sha256/x"})}),
    ],
)
def test_plain_text_and_pins_without_tls_are_refused(url, flags):
    with pytest.raises(ConfigError):
        Transport(url, TransportOptions(**flags))


def test_the_bucket_refuses_the_command_over_the_limit_until_it_refills(tmp_path):
    clock = Clock()
    bucket = TokenBucket(2, 600, tmp_path / "bucket.json", clock)
    assert [bucket.take(), bucket.take(), bucket.take()] == [True, True, False]
    assert bucket.retry_after() == 300
    # Restarting the agent does not refill it.
    again = TokenBucket(2, 600, tmp_path / "bucket.json", clock)
    assert again.take() is False
    clock.now += 300
    assert again.take() is True


@pytest.mark.parametrize("text", ["6", "0/600", "6/0", "a/b", "6/-1", ""])
def test_a_bad_command_rate_is_refused(text):
    with pytest.raises(ConfigError):
        parse_rate(text)
