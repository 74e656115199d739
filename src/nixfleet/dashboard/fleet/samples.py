"""A day of load and memory per host, for the host page's charts: a bounded ring in memory.

Why memory and not a table: heartbeats are the dashboard's hottest write path (grouped
commits, see heartbeats.py), and these charts are a glance, not a record. So each host
keeps one averaged point per `BUCKET_S` for `KEEP_S` (288 points), about 2.9 KB per host
as arrays of 32- and 16-bit numbers: 15 MB for 5,000 hosts at most, and nothing written
to disk. The cost: the charts start empty after a restart and each replica has its own.
"""

from __future__ import annotations

from array import array
from typing import Any

BUCKET_S = 300
KEEP_S = 86400
SLOTS = KEEP_S // BUCKET_S


class HostSamples:
    """One host's ring: per slot the averaged load and memory of one bucket, and a count.

    The slot of bucket b is b % SLOTS, so which bucket a slot holds follows from the
    newest bucket recorded (`latest`): slots are started over as the ring moves on, and no
    bucket number is stored per slot (a third of the ring's bytes when it was).
    """

    __slots__ = ("count", "latest", "load", "mem")

    def __init__(self) -> None:
        self.latest = -1  # the newest bucket recorded (start / BUCKET_S); none yet
        self.load = array("f", [0.0]) * SLOTS
        self.mem = array("f", [0.0]) * SLOTS
        self.count = array("H", [0]) * SLOTS

    def add(self, at: float, load1: float, mem_used: float | None) -> None:
        bucket = int(at // BUCKET_S)
        if bucket > self.latest:
            self._move_to(bucket)
        elif bucket <= self.latest - SLOTS:
            return  # a day older than the newest: its slot holds a newer bucket
        i = bucket % SLOTS
        if self.count[i] == 65535:
            return
        n = self.count[i]
        self.load[i] = (self.load[i] * n + load1) / (n + 1)
        if mem_used is not None:
            self.mem[i] = (self.mem[i] * n + mem_used) / (n + 1)
        self.count[i] = n + 1

    def _move_to(self, bucket: int) -> None:
        # The slots of the buckets after the newest (at most a day of them) start over.
        for b in range(max(self.latest + 1, bucket - SLOTS + 1), bucket + 1):
            i = b % SLOTS
            self.load[i], self.mem[i], self.count[i] = 0.0, 0.0, 0
        self.latest = bucket

    def points(self, now: float) -> list[dict[str, Any]]:
        """Return the points of the last day, oldest first."""
        out = []
        for age in range(SLOTS - 1, -1, -1):
            bucket = self.latest - age
            i = bucket % SLOTS
            if bucket >= 0 and self.count[i] and now - bucket * BUCKET_S < KEEP_S:
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
