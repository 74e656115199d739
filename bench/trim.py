"""What the allocator keeps and `malloc_trim` gives back: `python -m bench.trim`.

Run from the repository root:  python -m bench.trim [--sizes 0,50,1000] [--settle 15]
                                                     [--env MALLOC_ARENA_MAX=2 …]

For each size N, one dashboard (bench/target.py: `nixfleet serve`, fresh SQLite, N hosts)
runs under bench/mallocprobe.py:

1. Ready, logged in, 2 s idle: RSS and glibc's account, then `malloc_trim(0)`, then both again.
2. N simulated agents (bench/swarm.py) connect and heartbeat for `--settle` seconds; the same
   again. Step 2's "before" is of a process trimmed once at step 1, as `serve` would be.

Each line of the result gives RSS before → after the trim and what glibc said it held free.
With `--plain` the dashboard is `nixfleet serve` itself and only its RSS is read, at the same
stages: how to compare two trees (`PYTHONPATH=<other tree>/src python -m bench.trim --plain`).
Resident memory does not wait for a CPU: the figures hardly depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.swarm import Swarm
from bench.target import Target, host_ids, login, raise_nofile

MIB = 1 << 20


async def _trim(target: Target, log: Path) -> dict[str, Any]:
    assert target.proc is not None
    lines = len(log.read_text().splitlines()) if log.exists() else 0
    os.kill(target.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        got = log.read_text().splitlines() if log.exists() else []
        if len(got) > lines:
            record: dict[str, Any] = json.loads(got[-1])
            return record
    raise RuntimeError("bench: the dashboard did not answer SIGUSR1")


def _row(stage: str, r: dict[str, Any]) -> dict[str, Any]:
    b, a = r["before"], r["after"]
    return {
        "stage": stage,
        "rss_mib": [round(b["rss"] / MIB, 1), round(a["rss"] / MIB, 1)],
        "glibc_free_kept_mib": [round(b["free_kept"] / MIB, 1), round(a["free_kept"] / MIB, 1)],
        "glibc_in_use_mib": round(b["in_use"] / MIB, 1),
        "glibc_mmapped_mib": round(b["mmapped"] / MIB, 1),
        "threads": b["threads"],
        "sqlite_heap_mib": round(b["sqlite_heap"] / MIB, 1),
        "pymalloc_arenas": b["pymalloc_arenas"],
        "pymalloc_blocks_mib": round(b["pymalloc_blocks"] / MIB, 1),
        "pymalloc_free_mib": round(
            (b["pymalloc_free_in_pools"] + b["pymalloc_unused_pools"]) / MIB, 1
        ),
        "trim_ms": r["trim_ms"],
        **{k: v for k, v in r.items() if k.startswith("sqlite_")},
    }


Reading = Callable[[Target, str], Awaitable[dict[str, Any]]]


async def _by_stage(
    target: Target, agents: int, settle_s: float, again: int, every_s: float, read: Reading
) -> tuple[list[dict[str, Any]], int]:
    """Connect agents to the started target; return read's row at each stage (no agent,
    the agents settled, then `again` more rows every_s apart) and the agents' failures."""
    swarm = Swarm("", target.tokens)
    client = None
    rows = []
    try:
        await target.wait_healthy(120)
        swarm.ws_url = target.ws_url
        client = await login(target.base, target.password, timeout=120)
        await asyncio.sleep(2)
        rows.append(await read(target, "0 agents"))
        if agents:
            await swarm.connect(host_ids(agents), parallel=16)
            await asyncio.sleep(settle_s)
            rows.append(await read(target, f"{agents} agents"))
            for k in range(1, again + 1):
                await asyncio.sleep(every_s)
                rows.append(await read(target, f"{agents} agents, {k * every_s:.0f} s later"))
    finally:
        if client is not None:
            await client.aclose()
        await swarm.close()
        target.stop()
    return rows, len(swarm.failures)


async def measure(
    root: Path,
    agents: int,
    settle_s: float,
    env: dict[str, str],
    again: int = 0,
    every_s: float = 30,
    probe: bool = True,
) -> dict[str, Any]:
    """Return, by stage, what each allocator holds before and after a trim (probe), or
    only the RSS of a plain `nixfleet serve` with no trim from outside (probe False)."""
    target = await asyncio.to_thread(Target.create, root, agents, env)
    log = root / "trim.jsonl"

    async def trimmed(target: Target, stage: str) -> dict[str, Any]:
        return _row(stage, await _trim(target, log))

    async def rss(target: Target, stage: str) -> dict[str, Any]:
        return {"stage": stage, "rss_mib": round(target.sample().rss_bytes / MIB, 1)}

    target.start(runner=["bench.mallocprobe", str(log)] if probe else None)
    read = trimmed if probe else rss
    rows, failures = await _by_stage(target, agents, settle_s, again, every_s, read)
    return {"agents": agents, "env": env, "rows": rows, "agent_failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.trim")
    parser.add_argument("--sizes", default="0,50,1000")
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--again", type=int, default=0, help="trim this many times more …")
    parser.add_argument("--every", type=float, default=30.0, help="… this many seconds apart")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain `nixfleet serve`: RSS only, no trim from outside",
    )
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the dashboard")
    args = parser.parse_args()
    raise_nofile()
    env = dict(item.split("=", 1) for item in args.env)
    env.setdefault("NIXFLEET_HEARTBEAT_S", "5")
    out: dict[str, Any] = {"benchmark": "trim", "load_before": os.getloadavg(), "sizes": []}
    for n in (int(s) for s in args.sizes.split(",")):
        root = Path(tempfile.mkdtemp(prefix="nixfleet-trim-"))
        try:
            out["sizes"].append(
                asyncio.run(
                    measure(root, n, args.settle, env, args.again, args.every, not args.plain)
                )
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(out["sizes"][-1]), file=sys.stderr, flush=True)
    out["load_after"] = os.getloadavg()
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
