"""How many hosts one dashboard carries: the load benchmark behind `python -m bench`.

Run from the repository root:  python -m bench            (quick profile, < 5 minutes)
                               python -m bench --full     (N up to 10,000 agents)
                               python -m bench --replicas (bench/replicas.py: two
                                 replicas on PostgreSQL against one on SQLite)

1. For each fleet size N: a fresh dashboard (`nixfleet serve`, SQLite in a temp dir,
   generated secrets) with N hosts; N simulated agents connect (bench/swarm.py) and
   heartbeat at the interval the dashboard's welcome names.
   - capacity: the dashboard's RSS and CPU (from /proc) with the N agents idle;
   - dispatch: `test` commands POSTed at a fixed rate, round-robin over the hosts (open
     loop: a slow reply never delays the next POST); latency = POST → the agent has it;
   - bulk: one `POST /api/commands/bulk` naming every host; time until all N have it.
2. A mixed run with a smaller fleet:
   - output: M browser tabs follow /api/events; one agent streams lines stamped with their
     send time; latency = agent sends → tab receives (and per line, the slowest tab);
   - ingest: K agents send statuses in a closed loop (the next as soon as the dashboard's
     `status_ack` says the last one is stored) while commands are dispatched to the others.
3. Write JSON and a Markdown table (bench/results/<profile>.json, .md).

Everything is bounded: each phase has a deadline, and the dashboard and every connection
are stopped in a `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench.browsers import Browsers
from bench.gcprobe import summary as gc_summary
from bench.stats import machine, summary
from bench.swarm import OutputPlan, Swarm
from bench.target import Target, cpu_percent, host_ids, login, proc_sample, raise_nofile

RESULTS = Path(__file__).parent / "results"
Windows = dict[str, tuple[float, float]]  # phase → (start, end), monotonic


@dataclass
class Profile:
    name: str
    sizes: list[int]  # N: connected agents for capacity, dispatch and bulk
    idle_s: float  # capacity: seconds of idle heartbeating measured
    commands: int  # dispatch: commands per size
    rate: float  # dispatch: POSTs per second
    browsers: list[int]  # M: tabs for the output run
    mixed_hosts: int  # agents connected during output and ingest
    output_lines: int
    output_interval_s: float
    ingest_loops: list[int]  # K: agents in the closed status loop
    ingest_s: float
    heartbeat_s: float | None = None  # None: the dashboard's default
    gc_probe: bool = False  # log the dashboard's garbage collections (bench/gcprobe.py)
    spy: bool = False  # py-spy records the dashboard during each dispatch phase
    env: dict[str, str] = field(default_factory=dict)


PROFILES = {
    "quick": Profile(
        "quick", sizes=[100, 1000], idle_s=15, commands=500, rate=50, browsers=[10, 100],
        mixed_hosts=200, output_lines=200, output_interval_s=0.02, ingest_loops=[16, 64],
        ingest_s=8,
    ),
    "full": Profile(
        "full", sizes=[100, 1000, 5000, 10000], idle_s=30, commands=1000, rate=50,
        browsers=[10, 100], mixed_hosts=1000, output_lines=500, output_interval_s=0.02,
        ingest_loops=[16, 64, 256], ingest_s=15,
    ),
}  # fmt: skip


# --- phases -------------------------------------------------------------------------------
async def connect(target: Target, swarm: Swarm, ids: list[str]) -> dict[str, Any]:
    before = target.sample()
    seconds = await swarm.connect(ids)
    await asyncio.sleep(1)
    after = target.sample()
    return {
        "agents": len(ids),
        "connect_s": round(seconds, 2),
        "connects_per_s": round(len(ids) / seconds, 1),
        "connect_retries": swarm.connect_retries,
        "last_retry": swarm.last_retry,
        "rss_before_mib": round(before.rss_bytes / 2**20, 1),
        "rss_after_mib": round(after.rss_bytes / 2**20, 1),
    }


async def capacity(target: Target, swarm: Swarm, base_rss: int, idle_s: float) -> dict[str, Any]:
    """Return RSS and CPU of the dashboard while the connected agents only heartbeat."""
    n = swarm.size()
    sent0, me0, a = swarm.heartbeats_sent, proc_sample(os.getpid()), target.sample()
    await asyncio.sleep(idle_s)
    b, me1 = target.sample(), proc_sample(os.getpid())
    return {
        "agents": n,
        "heartbeat_s": swarm.heartbeat_interval(),
        "window_s": round(b.at - a.at, 1),
        "rss_mib": round(b.rss_bytes / 2**20, 1),
        "rss_idle_dashboard_mib": round(base_rss / 2**20, 1),
        "kib_per_agent": round((b.rss_bytes - base_rss) / 1024 / max(n, 1), 1),
        "cpu_percent": round(cpu_percent(a, b), 1),
        "heartbeats_per_s": round((swarm.heartbeats_sent - sent0) / (b.at - a.at), 1),
        "generator_cpu_percent": round(cpu_percent(me0, me1), 1),
    }


async def dispatch(
    target: Target,
    client: httpx.AsyncClient,
    swarm: Swarm,
    ids: list[str],
    commands: int,
    rate: float,
    spy: Path | None = None,
) -> dict[str, Any]:
    """Return latency of POST → agent receives `command`, open loop at `rate` per second.

    With spy, py-spy samples the dashboard for as long as the POSTs go out (raw folded
    stacks, the input of a flame graph; only the thread holding the GIL, so the samples are
    Python's CPU, not waits) and writes them there.
    """
    latencies: list[float] = []
    responses: list[float] = []
    errors: list[str] = []
    timeline: list[tuple[float, float]] = []  # (seconds into the run, latency ms)

    async def one(host_id: str) -> None:
        t0 = time.monotonic()
        try:
            res = await client.post(f"/api/hosts/{host_id}/command", json={"command": "test"})
            responses.append(time.monotonic() - t0)
            if res.status_code != 202:
                errors.append(f"{host_id}: HTTP {res.status_code}")
                return
            at = await swarm.wait_command(res.json()["command_id"], 60)
            latencies.append(at - t0)
            timeline.append((round(t0 - start, 3), round((at - t0) * 1000, 1)))
        except (httpx.HTTPError, TimeoutError) as exc:
            errors.append(f"{host_id}: {exc!r}")

    recorder = _spy(target, spy, commands / rate) if spy else None
    me0, a = proc_sample(os.getpid()), target.sample()
    start = time.monotonic()
    tasks = []
    for i in range(commands):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(ids[i % len(ids)])))
    await asyncio.gather(*tasks)
    b = target.sample()
    if recorder is not None:
        await asyncio.to_thread(recorder.wait, 60)
    return {
        "commands": commands,
        "rate_per_s": rate,
        "hosts": len(ids),
        "latency_ms": summary(latencies),
        "post_to_202_ms": summary(responses),
        "errors": len(errors),
        "first_errors": errors[:5],
        "dashboard_cpu_percent": round(cpu_percent(a, b), 1),
        "dashboard_cpu_s": round(b.cpu_s - a.cpu_s, 3),
        "window_s": round(b.at - a.at, 3),
        "generator_cpu_percent": round(cpu_percent(me0, proc_sample(os.getpid())), 1),
        "timeline": sorted(timeline),
    }


def _spy(target: Target, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Start py-spy on the dashboard for `seconds` (it must be installed: pip install py-spy)."""
    assert target.proc is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [exe, "record", "-p", str(target.proc.pid), "-d", str(max(1, round(seconds))),
         "-r", "200", "-f", "raw", "-o", str(out), "--nonblocking", "--gil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def per_command(capacity: dict[str, Any], dispatch: dict[str, Any]) -> dict[str, float]:
    """Return the dashboard's CPU ms per command: all of it, and net of the idle heartbeats
    (the capacity phase's CPU rate, same agents, just before)."""
    gross = dispatch["dashboard_cpu_s"] * 1000 / dispatch["commands"]
    idle = capacity["cpu_percent"] / 100 * dispatch["window_s"] * 1000 / dispatch["commands"]
    return {"gross_ms": round(gross, 2), "net_of_idle_ms": round(gross - idle, 2)}


BULK_MAX = 10000  # hosts in one bulk request (the API's limit)


async def bulk(client: httpx.AsyncClient, swarm: Swarm, ids: list[str]) -> dict[str, Any]:
    """Return the time from a bulk `switch` for all ids until every agent has it.

    The API takes at most BULK_MAX hosts a request (routes/commands.py): a larger fleet
    is POSTed in that many hosts at a time, one after the other, as a client would;
    `post_to_202_s` is then until the last 202, and `requests` says how many.
    """
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    chunks = [ids[i : i + BULK_MAX] for i in range(0, len(ids), BULK_MAX)]
    for chunk in chunks:
        res = await client.post(
            "/api/commands/bulk", json={"command": "switch", "host_ids": chunk}, timeout=300
        )
        if res.status_code != 202:
            raise RuntimeError(f"bench: bulk POST: HTTP {res.status_code} {res.text[:200]}")
        results += res.json()["results"]
    responded = time.monotonic() - t0
    cids = [r["command_id"] for r in results if "command_id" in r]
    arrived = await asyncio.gather(
        *(swarm.wait_command(c, 300) for c in cids), return_exceptions=True
    )
    times = [at - t0 for at in arrived if isinstance(at, float)]
    return {
        "hosts": len(ids),
        "requests": len(chunks),
        "post_to_202_s": round(responded, 3),
        "all_delivered_s": round(max(times), 3) if times else None,
        "delivered": len(times),
        "refused": len(results) - len(cids),
        "delivery_ms": summary(times),
    }


async def output(
    target: Target, client: httpx.AsyncClient, swarm: Swarm, host_id: str, tabs: int, p: Profile
) -> dict[str, Any]:
    """Return latency of an agent's output line → each browser tab, and → the last tab."""
    browsers = Browsers(client, tabs)
    try:
        await browsers.open()
        swarm.output_plan = OutputPlan(p.output_lines, p.output_interval_s)
        me0, a = proc_sample(os.getpid()), target.sample()
        res = await client.post(f"/api/hosts/{host_id}/command", json={"command": "test"})
        cid = res.json()["command_id"]
        deadline = time.monotonic() + 60 + p.output_lines * p.output_interval_s
        while time.monotonic() < deadline:
            got = [browsers.lines.get((cid, s), []) for s in range(1, p.output_lines + 1)]
            if all(len(g) == tabs for g in got):
                break
            await asyncio.sleep(0.1)
        each = [x for g in got for x in g]
        every = [max(g) for g in got if len(g) == tabs]
        return {
            "browsers": tabs,
            "lines": p.output_lines,
            "line_interval_ms": p.output_interval_s * 1000,
            "to_each_browser_ms": summary(each),
            "to_every_browser_ms": summary(every),
            "complete_lines": len(every),
            "events_seen": browsers.events,
            "dashboard_cpu_percent": round(cpu_percent(a, target.sample()), 1),
            "generator_cpu_percent": round(cpu_percent(me0, proc_sample(os.getpid())), 1),
        }
    finally:
        swarm.output_plan = OutputPlan()
        await browsers.close()


async def ingest(
    target: Target,
    client: httpx.AsyncClient,
    swarm: Swarm,
    ids: list[str],
    loops: int,
    p: Profile,
) -> dict[str, Any]:
    """Return statuses/s stored and acked in a closed loop of `loops` agents, and the
    dispatch latency to the other agents meanwhile."""
    loopers = [swarm.agents[h] for h in ids[:loops]]
    for agent in loopers:
        agent.acks.clear()
    me0, a = proc_sample(os.getpid()), target.sample()
    start = time.monotonic()
    await asyncio.gather(*(agent.loop_status() for agent in loopers))
    commands = max(int(p.ingest_s * 10), 10)
    during = await dispatch(target, client, swarm, ids[loops:], commands, 10)
    rest = p.ingest_s - (time.monotonic() - start)
    if rest > 0:
        await asyncio.sleep(rest)
    for agent in loopers:
        agent.stop_loop()
    elapsed = time.monotonic() - start
    cpu = round(cpu_percent(a, target.sample()), 1)
    me = round(cpu_percent(me0, proc_sample(os.getpid())), 1)
    await asyncio.sleep(0.5)  # let the last round trips land
    acks = [x for agent in loopers for x in agent.acks]
    return {
        "loops": loops,
        "seconds": round(elapsed, 1),
        "statuses_per_s": round(len(acks) / elapsed, 1),
        "ack_ms": summary(acks),
        "dispatch_during_ms": during["latency_ms"],
        "dispatch_errors": during["errors"],
        "dashboard_cpu_percent": cpu,
        "generator_cpu_percent": me,
    }


# --- runs ----------------------------------------------------------------------------------
async def _with_fleet(root: Path, n: int, p: Profile, body: Any) -> dict[str, Any]:
    """Start a dashboard with n hosts and n connected agents, run body, stop everything."""
    env = dict(p.env)
    if p.heartbeat_s is not None:
        env["NIXFLEET_HEARTBEAT_S"] = str(p.heartbeat_s)
    t0 = time.monotonic()
    target = await asyncio.to_thread(Target.create, root, n, env)
    setup_s = time.monotonic() - t0
    swarm = Swarm("", target.tokens)
    client: httpx.AsyncClient | None = None
    windows: Windows = {}
    gcs: dict[str, Any] = {}
    try:
        target.start(p.gc_probe)
        await target.wait_healthy()
        swarm.ws_url = target.ws_url
        client = await login(target.base, target.password)
        base_rss = target.sample().rss_bytes
        out: dict[str, Any] = {"hosts_created_s": round(setup_s, 1)}
        out["connect"] = await connect(target, swarm, host_ids(n))
        # The generator's own full collections over N connections stalled it for up to 2 s
        # at N = 10,000, which showed up as dashboard latency: keep them out of the scan.
        gc.freeze()
        out |= await body(target, swarm, client, base_rss, windows)
        out["agent_failures"] = len(swarm.failures)
        out["first_failures"] = swarm.failures[:5]
    except BaseException:
        log = root / "dashboard.log"
        if log.exists():  # the temp dir goes away: keep what the dashboard said
            tail = log.read_text(errors="replace").splitlines()[-40:]
            print("bench: the dashboard's log ends:", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        gc.unfreeze()
        if client is not None:
            await client.aclose()
        await swarm.close()
        target.stop()
        if p.gc_probe and target.gc_log.exists():
            gcs = {k: gc_summary(target.gc_log, *w) for k, w in windows.items()}
        shutil.rmtree(root, ignore_errors=True)
    if p.gc_probe:
        out["gc"] = gcs
    return out


async def run_size(root: Path, n: int, p: Profile) -> dict[str, Any]:
    async def body(
        target: Target, swarm: Swarm, client: httpx.AsyncClient, base: int, windows: Windows
    ) -> Any:
        ids = host_ids(n)
        t0 = time.monotonic()
        out = {"capacity": await capacity(target, swarm, base, p.idle_s)}
        t1 = time.monotonic()
        spy = RESULTS / f"spy-dispatch-{n}-{time.strftime('%H%M%S')}.txt" if p.spy else None
        profiling = p.gc_probe and os.environ.get("BENCH_PROFILE") == "1"
        if profiling:  # bench/gcprobe.py: cProfile during the dispatch phase only
            target.toggle_profile()
        out["dispatch"] = await dispatch(target, client, swarm, ids, p.commands, p.rate, spy)
        if profiling:
            target.toggle_profile(RESULTS / f"profile-dispatch-{n}-{time.strftime('%H%M%S')}.prof")
        out["dispatch"]["cpu_per_command"] = per_command(out["capacity"], out["dispatch"])
        windows |= {"capacity": (t0, t1), "dispatch": (t1, time.monotonic())}
        await asyncio.sleep(1)  # the last `finished` messages land; every host is free
        out["bulk"] = await bulk(client, swarm, ids)
        return out

    print(f"bench: N={n} …", file=sys.stderr, flush=True)
    return await _with_fleet(root, n, p, body)


async def run_mixed(root: Path, p: Profile) -> dict[str, Any]:
    async def body(
        target: Target, swarm: Swarm, client: httpx.AsyncClient, base: int, windows: Windows
    ) -> Any:
        ids = host_ids(p.mixed_hosts)
        out: dict[str, Any] = {"output": [], "ingest": []}
        for m in p.browsers:
            out["output"].append(await output(target, client, swarm, ids[-1], m, p))
        for k in p.ingest_loops:
            t0 = time.monotonic()
            out["ingest"].append(await ingest(target, client, swarm, ids[:-1], k, p))
            windows[f"ingest {k}"] = (t0, time.monotonic())
        return out

    print(f"bench: output and ingest, N={p.mixed_hosts} …", file=sys.stderr, flush=True)
    return await _with_fleet(root, p.mixed_hosts, p, body)


def run(p: Profile) -> dict[str, Any]:
    nofile = raise_nofile()
    gc.set_threshold(50_000, 50, 1000)  # as `nixfleet serve` does
    t0 = time.monotonic()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="nixfleet-bench-"))
    result: dict[str, Any] = {
        "benchmark": "load",
        "profile": asdict(p),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": _commit(),
        "machine": machine(),
        "nofile": nofile,
        "sizes": [],
    }
    try:
        for n in p.sizes:
            if n + 200 > nofile:  # each process (this one, the dashboard) holds n sockets
                print(f"bench: skipping N={n}: open-file limit {nofile}", file=sys.stderr)
                continue
            result["sizes"].append({"n": n, **asyncio.run(run_size(tmp / f"n{n}", n, p))})
        result["mixed"] = asyncio.run(run_mixed(tmp / "mixed", p))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_1_5_15"] = {"before": load_before, "after": os.getloadavg()}
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


# --- report --------------------------------------------------------------------------------
def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Profile `{r['profile']['name']}`, {r['when']}, commit `{r['commit']}`; "
        f"{m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, SQLite; "
        f"whole run {r['wall_s']} s; load average before {r['loadavg_1_5_15']['before'][0]:.2f}.",
        "",
        "| N agents | RSS MiB | KiB/agent | CPU % idle | dispatch p50 / p99 / max ms "
        "| CPU ms per command (net of idle) | bulk switch: 202 / all delivered s |",
        "|---:|---:|---:|---:|---|---|---|",
    ]
    for s in r["sizes"]:
        c, d, b = s["capacity"], s["dispatch"]["latency_ms"], s["bulk"]
        cpu = s["dispatch"].get("cpu_per_command", {})
        lines.append(
            f"| {s['n']} | {c['rss_mib']} | {c['kib_per_agent']} | {c['cpu_percent']} "
            f"| {d['p50']} / {d['p99']} / {d['max']} "
            f"| {cpu.get('gross_ms')} ({cpu.get('net_of_idle_ms')}) "
            f"| {b['post_to_202_s']} / {b['all_delivered_s']} |"
        )
    mixed = r.get("mixed")
    if mixed:
        lines += [
            "",
            f"Output and ingest with {r['profile']['mixed_hosts']} connected agents:",
            "",
            "| output to M browsers | each tab p50 / p99 ms | every tab p50 / p99 / max ms |",
            "|---:|---|---|",
        ]
        for o in mixed["output"]:
            e, v = o["to_each_browser_ms"], o["to_every_browser_ms"]
            lines.append(
                f"| M = {o['browsers']} | {e['p50']} / {e['p99']} "
                f"| {v['p50']} / {v['p99']} / {v['max']} |"
            )
        lines += [
            "",
            "| closed-loop agents | statuses/s stored | ack p50 / p99 ms "
            "| dispatch meanwhile p50 / p99 ms | dashboard CPU % |",
            "|---:|---:|---|---|---:|",
        ]
        for g in mixed["ingest"]:
            a, d = g["ack_ms"], g["dispatch_during_ms"]
            lines.append(
                f"| {g['loops']} | {g['statuses_per_s']} | {a['p50']} / {a['p99']} "
                f"| {d['p50']} / {d['p99']} | {g['dashboard_cpu_percent']} |"
            )
    return "\n".join(lines) + "\n"


def _replicas(args: argparse.Namespace) -> dict[str, Any]:
    from bench import replicas

    p = replicas.profile(PROFILES["full"], args.sizes)
    given = {"commands": args.commands, "idle_s": args.idle_s, "heartbeat_s": args.heartbeat_s,
             "spy": args.spy or None}  # fmt: skip
    p = replace(p, **{k: v for k, v in given.items() if v is not None})
    if args.pg_url and len(p.sizes) > 1:
        raise SystemExit("bench: --pg-url holds one fleet: give one size (--sizes N)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    partial = args.out_dir / f"{args.name or 'replicas'}.partial.json"
    result = replicas.run(p, args.pg_url, args.budget_s, partial)
    result |= {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": _commit(),
               "machine": machine(), "profile": asdict(p)}  # fmt: skip
    name = args.name or "replicas"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = replicas.markdown(result)
    (args.out_dir / f"{name}.md").write_text(table)
    print(table)
    return result


def _commit() -> str:
    res = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return res.stdout.strip() or "unknown"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the large sizes (up to 10,000)")
    parser.add_argument("--sizes", type=_ints, help="comma-separated N; '' skips them")
    parser.add_argument("--commands", type=int)
    parser.add_argument("--browsers", type=_ints)
    parser.add_argument("--mixed-hosts", type=int)
    parser.add_argument("--loops", type=_ints)
    parser.add_argument("--idle-s", type=float)
    parser.add_argument("--ingest-s", type=float)
    parser.add_argument("--output-lines", type=int)
    parser.add_argument("--heartbeat-s", type=float)
    parser.add_argument("--gc-probe", action="store_true", help="log the dashboard's GC pauses")
    parser.add_argument("--spy", action="store_true", help="py-spy the dashboard during dispatch")
    parser.add_argument("--name", help="name of the result files (default: the profile)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--replicas", action="store_true", help="two replicas on PostgreSQL vs one on SQLite"
    )
    parser.add_argument("--pg-url", help="--replicas: an empty database (default: a throwaway)")
    parser.add_argument("--budget-s", type=float, default=3000, help="--replicas: stop after")
    args = parser.parse_args(argv)
    if args.replicas:
        return _replicas(args)
    p = PROFILES["full" if args.full else "quick"]
    overrides = {
        "sizes": args.sizes,
        "commands": args.commands,
        "browsers": args.browsers,
        "mixed_hosts": args.mixed_hosts,
        "ingest_loops": args.loops,
        "idle_s": args.idle_s,
        "ingest_s": args.ingest_s,
        "output_lines": args.output_lines,
        "heartbeat_s": args.heartbeat_s,
        "gc_probe": args.gc_probe or None,
        "spy": args.spy or None,
        "name": args.name,
    }
    p = Profile(**(asdict(p) | {k: v for k, v in overrides.items() if v is not None}))
    result = run(p)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{p.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out_dir / f"{p.name}.md").write_text(table)
    print(table)
    print(f"JSON: {args.out_dir / (p.name + '.json')}")
    return result
