"""The time the dashboard adds between one rollout wave finishing and the next one being
queued for the wire: a 1,000-host rollout in waves of 100 on a real SQLite database, the
real engine (dashboard/fleet/rollouts.py); each wave's commands are finished the way the
agent handler stores them (guarded moves), then the gap to the next wave's commands is
timed. No agents: their network time is not the dashboard's. Bounded: one rollout.

    python -m bench.rollout_gap [--hosts 1000] [--wave 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from nixfleet.config import Settings
from nixfleet.core.commands import CommandState
from nixfleet.core.rollouts import RolloutPolicy
from nixfleet.dashboard.fleet.rollouts import Rollouts
from nixfleet.dashboard.fleet.service import Fleet
from nixfleet.storage import commands as command_store
from nixfleet.storage import hosts as host_store
from nixfleet.storage import rollouts as rollout_store
from nixfleet.storage.bus import LocalBus
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade


async def run(hosts: int, wave: int, root: Path) -> list[float]:
    url = f"sqlite+aiosqlite:///{root / 'bench.db'}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    fleet = Fleet(Settings(data_dir=root, database_url=url, demo=True), db, LocalBus())
    engine = Rollouts(fleet)
    now = time.time()
    for i in range(hosts):
        await host_store.add(db, f"h{i:04d}", f"{i:064x}", now, {})
    ids = [f"h{i:04d}" for i in range(hosts)]
    ro = await engine.create("bench", ids, "switch", RolloutPolicy(canary=wave, wave_size=wave))
    gaps: list[float] = []
    for index in range(ro["wave_count"]):
        rows = await rollout_store.hosts(db, ro["id"], index)
        for row in rows:  # what record_started + record_finished store for each host
            cid, host = row["command_id"], row["host_id"]
            await command_store.move(
                db, cid, host, [CommandState.QUEUED], CommandState.DISPATCHED, dispatched_at=now
            )
            await command_store.move(
                db, cid, host, [CommandState.DISPATCHED], CommandState.SUCCEEDED, finished_at=now
            )
        start = time.perf_counter()
        await engine.tick()  # what the last `finished` wakes
        gaps.append(time.perf_counter() - start)
    state = (await rollout_store.get(db, ro["id"]))["state"]
    assert state == "completed", state
    await db.close()
    return gaps[:-1]  # the last tick completes the rollout: no next wave


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--wave", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gaps = asyncio.run(run(args.hosts, args.wave, Path(tmp)))
    ms = sorted(g * 1000 for g in gaps)
    print(f"rollout of {args.hosts} hosts in waves of {args.wave}: {len(ms)} wave gaps")
    print(f"gap ms: median {statistics.median(ms):.1f}, max {ms[-1]:.1f}, min {ms[0]:.1f}")


if __name__ == "__main__":
    main()
