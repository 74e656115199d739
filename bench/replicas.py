"""Two replicas on PostgreSQL against one on SQLite: `python -m bench --replicas`.

Run from the repository root:  python -m bench --replicas --sizes 10000,20000

1. For each fleet size N, in the same run and with the same load generator:
   - one dashboard on SQLite carrying all N simulated agents (bench/swarm.py);
   - two dashboards (replicas a and b) on one PostgreSQL database, N/2 agents on each.
2. On each: memory (RSS of every replica with its agents heartbeating), dispatch (`test`
   POSTs at a fixed rate, open loop, round-robin over the hosts and, with replicas,
   alternating between them, so half the commands are queued on the replica that does not
   hold the agent and travel through LISTEN/NOTIFY), and one bulk `switch` naming every
   host, POSTed to replica a, timed until every agent has it.
3. NOTIFY throughput: the events replica b received from a during the bulk switch (its
   `nixfleet_bus_received` counter over the delivery time), and bench/pgbus.py's two-bus
   run (events in groups of 500) on the same database.
4. The load average (`uptime`) before and after each engine's run goes beside the figures:
   the machine may be shared.

PostgreSQL is the `--pg-url` given, or a throwaway cluster from tests/pgserver.py (fsync
off, as the tests run it). Everything is bounded: each phase has a deadline, the whole run
stops after `--budget-s`, and every process and connection is stopped in a `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from bench.generators import PER_PROCESS, SpreadSwarm
from bench.load import RESULTS, Profile, _spy, bulk, capacity
from bench.pgbus import _run as pgbus_run
from bench.stats import summary
from bench.swarm import Swarm
from bench.target import Target, cpu_percent, host_ids, login

METRICS_TOKEN = "bench-replicas-metrics-token-0123456789abcdef"
CONNECT_TIMEOUT_S = 1200.0  # per replica; 10,000 handshakes at 2 cores take minutes
FD_HEADROOM = 1024  # a dashboard's files besides its agents' sockets (pool, logs, listeners)


@dataclass
class Side:
    """One engine's dashboards (one on SQLite, two on PostgreSQL) and their clients."""

    engine: str
    targets: list[Target]
    clients: list[httpx.AsyncClient]


def _nofile(wanted: int) -> int:
    """Raise the open-file limit to `wanted` where allowed (root may lift the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, soft), max(wanted, hard)))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[tuple[str, Any]]:
    """Yield (url of an empty database, the cluster or None); a throwaway one if no url."""
    if url:
        yield url, None
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import pgserver  # the test suite's throwaway cluster

    bindir = pgserver.find_bindir()
    if bindir is None:
        raise SystemExit("bench: no PostgreSQL installed; pass --pg-url")
    cluster = pgserver.create(bindir)
    try:
        yield cluster.url(cluster.create_database()), cluster
    finally:
        pgserver.destroy(cluster)


async def _start(engine: str, root: Path, n: int, env: dict[str, str]) -> Side:
    """Create n hosts, start one dashboard (SQLite) or two (PostgreSQL), log in to each."""
    env = {**env, "NIXFLEET_METRICS_TOKEN": METRICS_TOKEN}
    first = await asyncio.to_thread(Target.create, root / "a", n, env)
    targets = [first]
    if engine == "postgresql":
        # Replica b: the same settings, secrets and database; its own port and log.
        second = Target(root / "b", first.env, first.password, first.tokens)
        second.root.mkdir(parents=True, exist_ok=True)
        targets.append(second)
    side = Side(engine, targets, [])
    for t in targets:
        t.start()
        await t.wait_healthy()
        side.clients.append(await login(t.base, t.password))
    return side


async def _stop(side: Side) -> None:
    for c in side.clients:
        await c.aclose()
    for t in side.targets:
        t.stop()


async def _dispatch(side: Side, swarm: Swarm, ids: list[str], p: Profile) -> dict[str, Any]:
    """Return POST → agent latency, round-robin over hosts and over the replicas."""
    latencies: list[float] = []
    responses: list[float] = []
    stages: list[tuple[float, float]] = []  # (POST → dispatched_at, dispatched_at → agent)
    errors: list[str] = []
    crossed: list[float] = []  # queued on the replica that does not hold the agent
    holder = {h: i % len(side.targets) for i, h in enumerate(ids)}

    async def one(i: int) -> None:
        host_id = ids[i % len(ids)]
        via = (i // 2) % len(side.clients)
        t0 = time.monotonic()
        try:
            res = await side.clients[via].post(
                f"/api/hosts/{host_id}/command", json={"command": "test"}
            )
            responses.append(time.monotonic() - t0)
            if res.status_code != 202:
                errors.append(f"HTTP {res.status_code}")
                return
            at = await swarm.wait_command(res.json()["command_id"], 60)
            if i % 10 == 0:  # where the time goes, for a sample
                cmd = (
                    await side.clients[via].get(f"/api/commands/{res.json()['command_id']}")
                ).json()
                wall0 = time.time() - (time.monotonic() - t0)
                dispatched = cmd["dispatched_at"] - wall0
                stages.append((dispatched, at - t0 - dispatched))
            latencies.append(at - t0)
            if via != holder[host_id]:
                crossed.append(at - t0)
        except (httpx.HTTPError, TimeoutError) as exc:
            errors.append(repr(exc)[:200])

    spies = []
    if p.spy:  # py-spy each replica while the POSTs go out (the GIL holder's samples)
        stamp = time.strftime("%H%M%S")
        for r, t in enumerate(side.targets):
            out = RESULTS / f"spy-replicas-{side.engine}-{len(ids)}-{r}-{stamp}.txt"
            spies.append(_spy(t, out, p.commands / p.rate))
    cpu0 = [t.sample() for t in side.targets]
    start = time.monotonic()
    tasks = []
    for i in range(p.commands):
        await asyncio.sleep(max(0.0, start + i / p.rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    cpu1 = [t.sample() for t in side.targets]
    for spy in spies:
        await asyncio.to_thread(spy.wait, 60)
    return {
        "commands": p.commands,
        # Each replica's CPU over the phase, per command POSTed to the whole fleet.
        "cpu_ms_per_command_per_replica": [
            round((b.cpu_s - a.cpu_s) * 1000 / p.commands, 1)
            for a, b in zip(cpu0, cpu1, strict=True)
        ],
        "rate_per_s": p.rate,
        "latency_ms": summary(latencies),
        "crossing_replicas_ms": summary(crossed),
        "post_to_202_ms": summary(responses),
        "post_to_dispatched_ms": summary([a for a, _ in stages]),
        "dispatched_to_agent_ms": summary([b for _, b in stages]),
        "errors": len(errors),
        "first_errors": errors[:5],
    }


async def _bus_received(target: Target) -> float:
    """Return replica `target`'s count of events received from the other replicas."""
    async with httpx.AsyncClient(base_url=target.base, timeout=30) as client:
        res = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    match = re.search(r"^nixfleet_bus_received_total(?:\{[^}]*\})? ([0-9.e+]+)$", res.text, re.M)
    return float(match.group(1)) if match else 0.0


async def run_engine(
    engine: str, root: Path, n: int, p: Profile, pg_url: str, lifetime_s: float = 3600
) -> dict[str, Any]:
    """Run one engine at one size; generator processes, if any, live at most `lifetime_s`."""
    env = dict(p.env)
    if p.heartbeat_s is not None:
        env["NIXFLEET_HEARTBEAT_S"] = str(p.heartbeat_s)
    if engine == "postgresql":
        env["NIXFLEET_DATABASE_URL"] = pg_url
    load_before = _load()
    t0 = time.monotonic()
    side = await _start(engine, root, n, env)
    setup_s = time.monotonic() - t0
    # Past PER_PROCESS agents the generator is several processes (bench/generators.py):
    # one cannot hold more sockets than its open-file limit.
    spread = n > PER_PROCESS
    swarm = SpreadSwarm("", side.targets[0].tokens) if spread else Swarm("", side.targets[0].tokens)
    ids = host_ids(n)
    try:
        base_rss = [t.sample().rss_bytes for t in side.targets]
        c0 = time.monotonic()
        # Host i on replica i % replicas; the replicas take their agents at the same time,
        # as behind a balancer.
        if isinstance(swarm, SpreadSwarm):
            plan = [(h, side.targets[i % len(side.targets)].ws_url) for i, h in enumerate(ids)]
            await swarm.connect_spread(plan, CONNECT_TIMEOUT_S, lifetime_s=lifetime_s)
        else:
            await asyncio.gather(
                *(
                    swarm.connect(
                        ids[r :: len(side.targets)], timeout=CONNECT_TIMEOUT_S, url=t.ws_url
                    )
                    for r, t in enumerate(side.targets)
                )
            )
        connect_s = time.monotonic() - c0
        gc.freeze()  # the generator's own collections over N connections (see load.py)
        await asyncio.sleep(1)
        cap = await capacity(side.targets[0], swarm, base_rss[0], p.idle_s)
        memory = [
            {
                "rss_mib": round(t.sample().rss_bytes / 2**20, 1),
                "agents": len(ids[r :: len(side.targets)]),
            }
            for r, t in enumerate(side.targets)
        ]
        dispatched = await _dispatch(side, swarm, ids, p)
        await asyncio.sleep(1)  # the last `finished` messages land; every host is free
        received0 = await _bus_received(side.targets[-1]) if engine == "postgresql" else 0.0
        cpu0 = [t.sample() for t in side.targets]
        switched = await bulk(side.clients[0], swarm, ids)
        cpu1 = [t.sample() for t in side.targets]
        out: dict[str, Any] = {
            "engine": engine,
            "replicas": len(side.targets),
            "n": n,
            "setup_s": round(setup_s, 1),
            "connect_s": round(connect_s, 1),
            "generator_processes": len(swarm.processes) if isinstance(swarm, SpreadSwarm) else 1,
            "connect_retries": swarm.connect_retries,
            "memory_per_replica": memory,
            "cpu_idle_percent_first_replica": cap["cpu_percent"],
            "dispatch": dispatched,
            "bulk": switched,
            "bulk_cpu_percent_per_replica": [
                round(cpu_percent(a, b), 1) for a, b in zip(cpu0, cpu1, strict=True)
            ],
        }
        if engine == "postgresql" and switched["all_delivered_s"]:
            got = await _bus_received(side.targets[-1]) - received0
            out["bulk_notify"] = {
                "events_received_by_b": int(got),
                "events_per_s": round(got / switched["all_delivered_s"], 1),
            }
        out["agent_failures"] = len(swarm.failures)
        out["first_failures"] = swarm.failures[:5]
        return out
    finally:
        gc.unfreeze()
        await swarm.close()
        await _stop(side)
        out_load = {"before": load_before, "after": _load()}
        print(f"bench: {engine} N={n} done; load {out_load}", file=sys.stderr, flush=True)
        shutil.rmtree(root, ignore_errors=True)


def run(
    p: Profile, pg_url: str | None, budget_s: float, partial: Path | None = None
) -> dict[str, Any]:
    import resource

    nofile = _nofile(2 * max(p.sizes, default=0) + 4096)
    hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    gc.set_threshold(50_000, 50, 1000)  # as `nixfleet serve` does
    t0 = time.monotonic()
    result: dict[str, Any] = {"benchmark": "replicas", "nofile": nofile, "runs": []}
    tmp = Path(tempfile.mkdtemp(prefix="nixfleet-bench-replicas-"))
    try:
        with postgres(pg_url) as (url, cluster):
            for n in p.sizes:
                for engine in ("postgresql", "sqlite"):
                    if time.monotonic() - t0 > budget_s:
                        print(f"bench: budget spent; skipping {engine} N={n}", file=sys.stderr)
                        continue
                    replicas = 2 if engine == "postgresql" else 1
                    if -(-n // replicas) + FD_HEADROOM > hard_nofile:
                        why = (
                            f"{engine} N={n}: one dashboard would hold {-(-n // replicas)} "
                            f"agent sockets, over this machine's hard open-file limit "
                            f"({hard_nofile}) less {FD_HEADROOM} for its other files"
                        )
                        result["skipped"] = [*result.get("skipped", []), why]
                        print(f"bench: skipping {why}", file=sys.stderr)
                        continue
                    if engine == "postgresql" and cluster is not None:
                        url = cluster.url(cluster.create_database())  # a fresh one per size
                    before = _load()
                    try:
                        left = budget_s - (time.monotonic() - t0) + CONNECT_TIMEOUT_S
                        root = tmp / f"{engine}{n}"
                        one = asyncio.run(run_engine(engine, root, n, p, url, left))
                    except Exception as exc:  # one engine's failure must not lose the others
                        result["failed"] = [*result.get("failed", []), f"{engine} N={n}: {exc!r}"]
                        print(f"bench: {engine} N={n} failed: {exc!r}", file=sys.stderr)
                        continue
                    one["loadavg_before_after"] = [before, _load()]
                    result["runs"].append(one)
                    if partial is not None:  # what is measured so far survives a later stop
                        partial.write_text(json.dumps(result, indent=2) + "\n")
            before = _load()
            result["pgbus"] = asyncio.run(pgbus_run(url, 20000, 500, 100, 60))
            result["pgbus"]["loadavg"] = [before, _load()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "| N agents | engine, replicas | RSS MiB per replica | dispatch p50 / p99 / max ms "
        "| … queued on the other replica p50 / p99 ms | bulk switch: 202 / all delivered s "
        "| NOTIFY events/s during the bulk | load avg before → after |",
        "|---:|---|---|---|---|---|---:|---|",
    ]
    for s in r["runs"]:
        d, x, b = s["dispatch"]["latency_ms"], s["dispatch"]["crossing_replicas_ms"], s["bulk"]
        rss = " + ".join(str(m["rss_mib"]) for m in s["memory_per_replica"])
        notify = s.get("bulk_notify", {}).get("events_per_s", "–")
        crossing = f"{x['p50']} / {x['p99']}" if x["count"] else "–"
        load = s["loadavg_before_after"]
        lines.append(
            f"| {s['n']} | {s['engine']}, {s['replicas']} | {rss} "
            f"| {d['p50']} / {d['p99']} / {d['max']} | {crossing} "
            f"| {b['post_to_202_s']} / {b['all_delivered_s']} | {notify} "
            f"| {load[0]} → {load[1]} |"
        )
    for why in r.get("skipped", []):
        lines.append(f"\nNot run: {why}.")
    bus = r.get("pgbus")
    if bus:
        lines += [
            "",
            f"Bus alone (two PgBus on the same database): {bus['events_per_s']} events/s in "
            f"groups of {bus['group']}; publish → delivery p50 {bus['latency_ms_p50']} ms, "
            f"p99 {bus['latency_ms_p99']} ms (load average {bus['loadavg'][0]}).",
        ]
    return "\n".join(lines) + "\n"


def profile(base: Profile, sizes: list[int] | None) -> Profile:
    """Return the replica run's profile: sizes 10,000 and 20,000 unless given."""
    return replace(base, name="replicas", sizes=sizes or [10000, 20000])
