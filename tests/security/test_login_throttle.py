"""Login throttling: a few free failures, then a wait that doubles up to a cap."""

from __future__ import annotations

from nixfleet.security.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, **kw) -> LoginThrottle:
    return LoginThrottle(free_failures=3, base_delay_s=2, max_delay_s=60, clock=clock, **kw)


def test_the_first_failures_cost_nothing_then_the_wait_doubles_to_the_cap():
    clock = Clock()
    throttle = make(clock)
    waits = []
    for _ in range(10):
        throttle.failed("ip:1.2.3.4")
        waits.append(throttle.retry_after("ip:1.2.3.4"))
    assert waits == [0, 0, 2, 4, 8, 16, 32, 60, 60, 60]


def test_the_wait_runs_out_with_time():
    clock = Clock()
    throttle = make(clock)
    for _ in range(5):
        throttle.failed("user:admin")
    assert throttle.retry_after("user:admin") == 8
    clock.now += 5
    assert throttle.retry_after("user:admin") == 3
    clock.now += 3
    assert throttle.retry_after("user:admin") == 0


def test_keys_are_independent_and_a_success_forgets():
    clock = Clock()
    throttle = make(clock)
    for _ in range(4):
        throttle.failed("user:admin")
    assert throttle.retry_after("user:admin") > 0
    assert throttle.retry_after("ip:10.0.0.1") == 0
    throttle.succeeded("user:admin")
    assert throttle.retry_after("user:admin") == 0


def test_memory_stays_bounded_when_addresses_are_sprayed():
    clock = Clock()
    throttle = make(clock, max_keys=100)
    for i in range(1000):
        throttle.failed(f"ip:10.0.{i // 256}.{i % 256}")
    assert len(throttle._records) <= 100


def test_addresses_an_account_logged_in_from_are_remembered_a_bounded_few():
    clock = Clock()
    throttle = make(clock)
    throttle.remember("user:admin", "198.51.100.7")
    assert throttle.known("user:admin", "198.51.100.7")
    assert not throttle.known("user:admin", "203.0.113.9")
    assert not throttle.known("user:root", "198.51.100.7")
    for i in range(100):
        throttle.remember("user:admin", f"10.0.0.{i}")
    assert not throttle.known("user:admin", "198.51.100.7")  # the oldest went first
    assert throttle.known("user:admin", "10.0.0.99")
