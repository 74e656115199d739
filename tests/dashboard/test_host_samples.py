"""The host page's day of load and memory (dashboard/fleet/samples.py): one point per
five minutes, the average of the heartbeats in it, for the last day; a late heartbeat
still counts in its own five minutes, one older than a day is dropped. The ring keeps
only the slots it has reached; what it shows is what a full day's ring showed."""

from __future__ import annotations

import random
from array import array
from typing import Any

from nixfleet.dashboard.fleet.samples import BUCKET_S, KEEP_S, SLOTS, HostSamples, Samples

DAY0 = 1_764_806_400.0  # a midnight, in seconds since the epoch


def _f32(x: float) -> float:
    return array("f", [x])[0]


class Day:
    """What the charts show, said plainly: per five minutes the running averages (kept
    as 32-bit floats), for the newest day of buckets."""

    def __init__(self) -> None:
        self.buckets: dict[int, tuple[float, float, int]] = {}
        self.latest = -1

    def add(self, at: float, load1: float, mem_used: float | None) -> None:
        b = int(at // BUCKET_S)
        if b <= self.latest - SLOTS:
            return
        self.latest = max(self.latest, b)
        self.buckets = {k: v for k, v in self.buckets.items() if k > self.latest - SLOTS}
        load, mem, n = self.buckets.get(b, (0.0, 0.0, 0))
        if n == 65535:
            return
        load = _f32((load * n + load1) / (n + 1))
        mem = mem if mem_used is None else _f32((mem * n + mem_used) / (n + 1))
        self.buckets[b] = (load, mem, n + 1)

    def points(self, now: float) -> list[dict[str, Any]]:
        return [
            {"at": float(b * BUCKET_S), "load1": round(load, 3), "mem_used": round(mem, 4)}
            for b, (load, mem, _) in sorted(self.buckets.items())
            if now - b * BUCKET_S < KEEP_S
        ]


def _heartbeats(rng: random.Random, count: int) -> list[tuple[float, float, float | None]]:
    at, beats = DAY0 + rng.uniform(0, KEEP_S), []
    for _ in range(count):
        step = rng.choice([5.0, 30.0, 60.0, 299.0, 3600.0, KEEP_S / 2, KEEP_S * 1.5])
        at += rng.uniform(0, step)
        late = at - rng.choice([0.0, 0.0, 0.0, 600.0, KEEP_S - 1, KEEP_S + 600])
        mem = None if rng.random() < 0.1 else rng.random()
        beats.append((late, rng.uniform(0, 16), mem))
    return beats


def test_a_day_of_heartbeats_shows_the_points_of_each_five_minutes_whatever_their_order():
    rng = random.Random(20)
    for _ in range(200):
        ring, day = HostSamples(), Day()
        for at, load1, mem in _heartbeats(rng, rng.randrange(1, 400)):
            ring.add(at, load1, mem)
            day.add(at, load1, mem)
            if rng.random() < 0.05:
                now = at + rng.choice([0.0, 60.0, KEEP_S / 3, KEEP_S + 1])
                assert ring.points(now) == day.points(now)
        now = at + rng.uniform(0, KEEP_S)
        assert ring.points(now) == day.points(now)


def test_a_host_heartbeating_every_minute_for_two_days_shows_the_last_288_points():
    ring = HostSamples()
    for minute in range(2 * 24 * 60):
        ring.add(DAY0 + minute * 60, minute % 7, 0.5)
    points = ring.points(DAY0 + 2 * KEEP_S - 60)  # at the last heartbeat
    assert len(points) == SLOTS
    assert points[0]["at"] == DAY0 + KEEP_S and points[-1]["at"] == DAY0 + 2 * KEEP_S - BUCKET_S
    assert all(p["mem_used"] == 0.5 for p in points)


def test_a_fresh_host_shows_only_what_it_sent_and_a_forgotten_one_nothing():
    samples = Samples()
    samples.record("atlas", {"load1": 1.5, "mem_total": 1000, "mem_available": 250}, DAY0)
    samples.record("atlas", {"load1": 2.5, "mem_total": 1000, "mem_available": 750}, DAY0 + 60)
    assert samples.points("atlas", DAY0 + 120) == [{"at": DAY0, "load1": 2.0, "mem_used": 0.5}]
    samples.forget("atlas")
    assert samples.points("atlas", DAY0 + 120) == []
