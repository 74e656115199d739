"""`python -m bench.pgbus --url postgresql://…`: events between two replicas over PostgreSQL.

Two PgBus instances (replicas a and b) on one database; a publishes, b receives.
Throughput: `--events` events published in groups of `--group` at once (as heartbeat groups
are), timed until b holds them all. Latency: `--probes` single events one after another,
publish to delivery on b. Bounded: it stops after the counts given or `--timeout` seconds.
The database must be migrated (`nixfleet db upgrade`); the journal rows are left to prune.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.stats import percentile
from nixfleet.storage.db import Database
from nixfleet.storage.pgbus import PgBus


async def _run(url: str, events: int, group: int, probes: int, timeout: float) -> dict:
    dbs = [Database(url), Database(url)]
    a, b = PgBus(dbs[0], "bench-a"), PgBus(dbs[1], "bench-b")
    await a.start()
    await b.start()
    arrived: dict[int, float] = {}
    b.subscribe(lambda e: arrived.setdefault(e["i"], time.perf_counter()))
    try:
        began = time.perf_counter()
        for start in range(0, events, group):
            batch = range(start, min(start + group, events))
            await asyncio.gather(*(a.publish({"type": "bench", "i": i}) for i in batch))
        while len(arrived) < events and time.perf_counter() - began < timeout:
            await asyncio.sleep(0.01)
        took = time.perf_counter() - began
        latencies = []
        for n in range(probes):
            i = events + n
            sent = time.perf_counter()
            await a.publish({"type": "bench", "i": i})
            while i not in arrived and time.perf_counter() - sent < 5:
                await asyncio.sleep(0.0005)
            latencies.append((arrived.get(i, time.perf_counter()) - sent) * 1000)
    finally:
        for bus, db in zip((a, b), dbs, strict=True):
            await bus.close()
            await db.close()
    return {
        "events": events,
        "group": group,
        "received": min(len(arrived), events),
        "seconds": round(took, 3),
        "events_per_s": round(min(len(arrived), events) / took),
        "latency_ms_p50": round(percentile(latencies, 50), 2),
        "latency_ms_p99": round(percentile(latencies, 99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--group", type=int, default=500)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    result = asyncio.run(_run(args.url, args.events, args.group, args.probes, args.timeout))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
