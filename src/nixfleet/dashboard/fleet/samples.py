"""A day of load and memory per host, for the host page's charts: a bounded ring in memory.

Why memory and not a table: heartbeats are the dashboard's hottest write path (grouped
commits, see heartbeats.py), and these charts are a glance, not a record. So each host
keeps one averaged point per `BUCKET_S` for `KEEP_S` (288 points), at most about 3 KB per
host as arrays of 32- and 16-bit numbers (a host seen for less than a day keeps less):
15 MB for 5,000 hosts at most, and nothing written to disk. The cost: the charts start
empty after a restart and each replica has its own.
"""

from __future__ import annotations

from array import array
from typing import Any

BUCKET_S = 300
KEEP_S = 86400
SLOTS = KEEP_S // BUCKET_S
_ZEROS_F = array("f", [0.0]) * SLOTS  # what new slots are filled from
_ZEROS_H = array("H", [0]) * SLOTS


class HostSamples:
    """One host's ring: per slot the averaged load and memory of one bucket, and a count.

    The slot of bucket b is (b - origin) % SLOTS, origin being the first bucket recorded,
    so which bucket a slot holds follows from the newest recorded (`latest`): slots are
    started over as the ring moves on, and no bucket number is stored per slot (a third
    of the ring's bytes when it was). The arrays grow to the buckets from the first to
    the newest and stop at SLOTS: a host seen for an hour keeps 12 slots, not a day's 288
    (3 KiB for each host of a dashboard that started minutes ago, most of its memory per
    connected agent then; docs/benchmarks.md).
    """

    __slots__ = ("count", "latest", "load", "mem", "origin")

    def __init__(self) -> None:
        self.origin = -1  # the first bucket recorded (start / BUCKET_S); none yet
        self.latest = -1  # the newest bucket recorded
        self.load = array("f")
        self.mem = array("f")
        self.count = array("H")

    def add(self, at: float, load1: float, mem_used: float | None) -> None:
        bucket = int(at // BUCKET_S)
        if not self.count:  # the first sample
            self.origin = self.latest = bucket
            self._grow(1)
        if bucket > self.latest:
            self._move_to(bucket)
        elif bucket <= self.latest - SLOTS:
            return  # a day older than the newest: its slot holds a newer bucket
        elif bucket < self.origin and len(self.count) < SLOTS:
            self._grow_back(self.origin - bucket)
        i = (bucket - self.origin) % SLOTS
        if self.count[i] == 65535:
            return
        n = self.count[i]
        self.load[i] = (self.load[i] * n + load1) / (n + 1)
        if mem_used is not None:
            self.mem[i] = (self.mem[i] * n + mem_used) / (n + 1)
        self.count[i] = n + 1

    def _move_to(self, bucket: int) -> None:
        if len(self.count) < SLOTS:
            self._grow(min(SLOTS, bucket - self.origin + 1) - len(self.count))
        # The slots of the buckets after the newest (at most a day of them) start over.
        for b in range(max(self.latest + 1, bucket - SLOTS + 1), bucket + 1):
            i = (b - self.origin) % SLOTS
            self.load[i], self.mem[i], self.count[i] = 0.0, 0.0, 0
        self.latest = bucket

    def _grow(self, n: int) -> None:
        """Add n empty slots after the newest (not yet a full ring: no slot wraps)."""
        self.load.extend(_ZEROS_F[:n])
        self.mem.extend(_ZEROS_F[:n])
        self.count.extend(_ZEROS_H[:n])
        if len(self.count) == SLOTS:
            self._fit()

    def _grow_back(self, n: int) -> None:
        """Add n empty slots before the first: a bucket older than it arrived late."""
        self.load[0:0] = _ZEROS_F[:n]
        self.mem[0:0] = _ZEROS_F[:n]
        self.count[0:0] = _ZEROS_H[:n]
        self.origin -= n
        if len(self.count) == SLOTS:
            self._fit()

    def _fit(self) -> None:
        # A full ring: copies of exactly SLOTS entries, without what growing kept spare.
        self.load, self.mem = array("f", self.load), array("f", self.mem)
        self.count = array("H", self.count)

    def points(self, now: float) -> list[dict[str, Any]]:
        """Return the points of the last day, oldest first."""
        out = []
        # A bucket before the origin has no slot (a late one moved the origin back to it).
        for bucket in range(max(self.latest - SLOTS + 1, self.origin, 0), self.latest + 1):
            i = (bucket - self.origin) % SLOTS
            if self.count[i] and now - bucket * BUCKET_S < KEEP_S:
                out.append(
                    {
                        "at": float(bucket * BUCKET_S),
                        "load1": round(self.load[i], 3),
                        "mem_used": round(self.mem[i], 4),
                    }
                )
        return out


class Samples:
    def __init__(self, max_hosts: int = 20_000) -> None:
        self._hosts: dict[str, HostSamples] = {}
        self._max_hosts = max_hosts  # bounds memory even if host rows churn

    def record(self, host_id: str, status: dict[str, Any], at: float) -> None:
        ring = self._hosts.get(host_id)
        if ring is None:
            if len(self._hosts) >= self._max_hosts:
                return
            ring = self._hosts[host_id] = HostSamples()
        total = float(status.get("mem_total") or 0)
        used = 1 - float(status.get("mem_available") or 0) / total if total > 0 else None
        ring.add(at, float(status.get("load1") or 0), used)

    def forget(self, host_id: str) -> None:
        self._hosts.pop(host_id, None)

    def points(self, host_id: str, now: float) -> list[dict[str, Any]]:
        ring = self._hosts.get(host_id)
        return ring.points(now) if ring else []
