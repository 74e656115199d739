"""The time the dashboard adds between one rollout wave finishing and the next being on the
wire: a 1,000-host rollout in waves of 100, with simulated agents.

Run from the repository root:  python -m bench.rollout_gap              (with agents)
                               python -m bench.rollout_gap --engine-only

With agents (the default):
1. A fresh dashboard (`nixfleet serve`, SQLite in a temp dir; bench/target.py) with N
   hosts, and N simulated agents connected (bench/swarm.py), heartbeating as usual.
2. One rollout of `switch` created through `POST /api/rollouts` as an operator would:
   canary = wave size = W, no pause, no failure budget left over.
3. Each agent answers its command: `started`, a run of a random time in [--run-min,
   --run-max], then `finished` (succeeded). The agents record when each `command` arrived
   and when each `finished` left (one clock: everything runs on this machine).
4. Per wave boundary: gap = the last `finished` of wave k leaving its agent → the first
   `command` of wave k+1 arriving at its agent; spread = → the last one of wave k+1
   arriving. Split with the dashboard's own stamps (the commands table): finish stored →
   next wave queued (the rollout engine) → claimed (the hub) → on the wire.
5. JSON to bench/results/rollout_gap.json, a summary printed. Bounded: one rollout, a
   deadline on every phase; the dashboard and every connection are stopped in a `finally`.

--engine-only: no dashboard process and no agents. The real engine
(dashboard/fleet/rollouts.py) on a SQLite file; each wave's commands are finished through
the guarded moves the agent handler makes, and one `tick` (what the last `finished` wakes)
is timed: the engine's own share of the gap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import machine
from bench.swarm import Swarm
from bench.target import Target, cpu_percent, host_ids, login, proc_sample, raise_nofile
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

RESULTS = Path(__file__).parent / "results" / "rollout_gap.json"
CONNECT_TIMEOUT_S = 300
ROLLOUT_TIMEOUT_S = 300  # the rollout itself; waves of agents that run about a second


# --- with agents ----------------------------------------------------------------------------
async def with_agents(
    hosts: int, wave: int, run_s: tuple[float, float], root: Path
) -> dict[str, Any]:
    target = await asyncio.to_thread(Target.create, root, hosts)
    swarm = Swarm("", target.tokens, run_s=run_s)
    client = None
    try:
        target.start()
        await target.wait_healthy()
        swarm.ws_url = target.ws_url
        client = await login(target.base, target.password, timeout=120)
        connect_s = await swarm.connect(host_ids(hosts), timeout=CONNECT_TIMEOUT_S)
        await asyncio.sleep(1)  # the last welcomes' statuses settle
        out = await _rollout(target, client, swarm, hosts, wave)
        out["connect_s"] = round(connect_s, 1)
        out["agent_failures"] = swarm.failures[:5]
        return out
    except BaseException:
        log = target.root / "dashboard.log"
        if log.exists():  # the temp dir goes away: keep what the dashboard said
            tail = log.read_text(errors="replace").splitlines()[-40:]
            print("bench: the dashboard's log ends:", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        if client is not None:
            await client.aclose()
        await swarm.close()
        target.stop()


async def _rollout(
    target: Target, client: Any, swarm: Swarm, hosts: int, wave: int
) -> dict[str, Any]:
    """Run one rollout over every host; return its gaps, duration and CPU."""
    ids = host_ids(hosts)
    body = {"command": "switch", "host_ids": ids, "policy": {"canary": wave, "wave_size": wave}}
    me0, a = proc_sample(os.getpid()), target.sample()
    t0 = time.monotonic()
    res = await client.post("/api/rollouts", json=body)
    if res.status_code != 201:
        raise RuntimeError(f"bench: POST /api/rollouts: HTTP {res.status_code} {res.text[:300]}")
    ro = res.json()
    waves = [[h["host_id"] for h in w["hosts"]] for w in ro["waves"]]
    deadline = t0 + ROLLOUT_TIMEOUT_S
    while len(swarm.finished_sent) < hosts:
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: {len(swarm.finished_sent)} of {hosts} finished in time")
        await asyncio.sleep(0.05)
    done = await _completed(client, ro["id"], deadline)
    duration = done - t0
    b, me1 = target.sample(), proc_sample(os.getpid())
    rows = _stored_commands(target.root / "dashboard" / "nixfleet.db")
    return {
        "rollout_s": round(duration, 2),
        "waves": len(waves),
        "boundaries": boundaries(waves, swarm, rows),
        "dashboard_cpu_percent": round(cpu_percent(a, b), 1),
        "generator_cpu_percent": round(cpu_percent(me0, me1), 1),
        "commands_received": len(swarm.received),
    }


async def _completed(client: Any, rollout_id: str, deadline: float) -> float:
    """Return when the rollout read `completed` (after its last host's finish went out)."""
    while time.monotonic() < deadline:
        ro = (await client.get(f"/api/rollouts/{rollout_id}")).json()
        if ro["state"] == "completed":
            return time.monotonic()
        if ro["state"] not in ("running", "paused"):
            raise RuntimeError(f"bench: the rollout ended {ro['state']}: {ro['report']}")
        await asyncio.sleep(0.1)
    raise RuntimeError("bench: the rollout did not complete in time")


def _stored_commands(db: Path) -> dict[str, dict[str, float]]:
    """Return each command's stamps as the dashboard stored them (wall clock)."""
    with sqlite3.connect(db) as conn:
        cur = conn.execute("SELECT id, created_at, dispatched_at, finished_at FROM commands")
        return {
            cid: {"created_at": c, "dispatched_at": d, "finished_at": f}
            for cid, c, d, f in cur.fetchall()
        }


def boundaries(
    waves: list[list[str]], swarm: Swarm, rows: dict[str, dict[str, float]]
) -> list[dict[str, float]]:
    """Return, per wave boundary, the gap and the spread (agents' clock) and the dashboard's
    steps in between (its stamps), in milliseconds."""
    wall = time.time() - time.monotonic()  # agents stamp monotonic, the dashboard wall time
    wave_of = {h: i for i, w in enumerate(waves) for h in w}
    by_wave: list[list[str]] = [[] for _ in waves]
    for cid, host in swarm.command_hosts.items():
        by_wave[wave_of[host]].append(cid)
    out = []
    for k in range(len(waves) - 1):
        done, nxt = by_wave[k], by_wave[k + 1]
        last_finish = max(swarm.finished_sent[c] for c in done)
        arrivals = [swarm.received[c] for c in nxt]
        stored = max(rows[c]["finished_at"] for c in done)
        queued = min(rows[c]["created_at"] for c in nxt)
        claimed = min(rows[c]["dispatched_at"] for c in nxt)
        out.append(
            {
                "gap_ms": round((min(arrivals) - last_finish) * 1000, 1),
                "spread_ms": round((max(arrivals) - last_finish) * 1000, 1),
                "finish_to_stored_ms": round((stored - (last_finish + wall)) * 1000, 1),
                "stored_to_queued_ms": round((queued - stored) * 1000, 1),
                "queued_to_claimed_ms": round((claimed - queued) * 1000, 1),
                "claimed_to_wire_ms": round((min(arrivals) + wall - claimed) * 1000, 1),
            }
        )
    return out


# --- engine only ------------------------------------------------------------------------------
async def engine_only(hosts: int, wave: int, root: Path) -> list[float]:
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


# --- output ---------------------------------------------------------------------------------
def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "max": round(ordered[-1], 1),
        "min": round(ordered[0], 1),
    }


def report(result: dict[str, Any]) -> str:
    lines = [f"rollout of {result['hosts']} hosts in waves of {result['wave']}"]
    if "engine_tick_ms" in result:
        t = result["engine_tick_ms"]
        lines.append(f"engine only, one tick ms: median {t['median']}, max {t['max']}")
    if "agents" in result:
        r = result["agents"]
        lines.append(
            f"with agents: {len(r['boundaries'])} wave gaps, rollout {r['rollout_s']} s, "
            f"dashboard CPU {r['dashboard_cpu_percent']} %, generator CPU "
            f"{r['generator_cpu_percent']} %"
        )
        for key, s in r["summary_ms"].items():
            lines.append(f"  {key}: median {s['median']}, max {s['max']}, min {s['min']}")
    before, after = result["loadavg_1_5_15"]["before"], result["loadavg_1_5_15"]["after"]
    lines.append(f"load average {before[0]:.2f} before, {after[0]:.2f} after")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.rollout_gap")
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--wave", type=int, default=100)
    ap.add_argument("--run-min", type=float, default=0.2, help="an agent's shortest run, s")
    ap.add_argument("--run-max", type=float, default=1.0, help="an agent's longest run, s")
    ap.add_argument("--engine-only", action="store_true", help="no dashboard, no agents")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    raise_nofile()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "hosts": args.hosts,
        "wave": args.wave,
        "machine": machine(),
        "loadavg_1_5_15": {"before": os.getloadavg()},
    }
    root = Path(tempfile.mkdtemp(prefix="nixfleet-rollout-gap-"))
    try:
        if args.engine_only:
            ticks = asyncio.run(engine_only(args.hosts, args.wave, root))
            result["engine_tick_ms"] = _stats([t * 1000 for t in ticks])
        else:
            run_s = (args.run_min, args.run_max)
            r = asyncio.run(with_agents(args.hosts, args.wave, run_s, root))
            keys = r["boundaries"][0].keys() if r["boundaries"] else []
            r["summary_ms"] = {k: _stats([b[k] for b in r["boundaries"]]) for k in keys}
            r["run_s"] = list(run_s)
            result["agents"] = r
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["loadavg_1_5_15"]["after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(report(result))
    return result


if __name__ == "__main__":
    main()
