"""Memory per connected agent, by the line that allocated it: `python -m bench.connmem`.

Run from the repository root:  python -m bench.connmem [--agents 1000] [--settle 20] [--frames 8]

1. A dashboard (bench/target.py: `nixfleet serve`, fresh SQLite, N hosts) is started under
   bench/gcprobe.py with tracemalloc on.
2. Before any agent connects, and again once N simulated agents (bench/swarm.py) have
   connected and sent a heartbeat or two, the dashboard writes a tracemalloc snapshot.
3. The difference is grouped by file and by line, in bytes per agent; RSS per agent is
   given too (inflated by tracemalloc's own bookkeeping: take the load benchmark's figure
   for RSS, this one for where it goes).
4. With `--frames N` (N > 1) each allocation keeps N frames and the biggest tracebacks are
   listed too, innermost frame first: which caller a line like `contextlib.py:473` is for.
Load-independent: the bytes do not depend on how busy the machine is.
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
import tracemalloc
from pathlib import Path
from typing import Any

from bench.swarm import Swarm
from bench.target import Target, host_ids, login, raise_nofile

SITE = "site-packages/"


def _where(filename: str) -> str:
    if SITE in filename:
        return filename.split(SITE, 1)[1]
    if "/src/nixfleet/" in filename:
        return "nixfleet/" + filename.split("/src/nixfleet/", 1)[1]
    if "/lib/python3" in filename:
        return "stdlib/" + filename.split("/lib/python3", 1)[1].split("/", 1)[1]
    return filename


async def _snapshot(target: Target, n: int) -> tracemalloc.Snapshot:
    assert target.proc is not None
    path = Path(f"{target.gc_log}.{n}.snap")
    os.kill(target.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if path.exists():
            size = path.stat().st_size
            await asyncio.sleep(1)
            if path.stat().st_size == size:
                return tracemalloc.Snapshot.load(str(path))
    raise RuntimeError("bench: the dashboard wrote no snapshot")


def _frames(trace: tracemalloc.Traceback) -> list[str]:
    return [f"{_where(f.filename)}:{f.lineno}" for f in reversed(list(trace))]


async def measure(
    root: Path, agents: int, settle_s: float, top: int, frames: int = 1
) -> dict[str, Any]:
    env = {"BENCH_TRACEMALLOC": str(frames), "NIXFLEET_HEARTBEAT_S": "5"}
    target = await asyncio.to_thread(Target.create, root, agents, env)
    swarm = Swarm("", target.tokens)
    client = None
    try:
        target.start(gc_probe=True)
        await target.wait_healthy(120)
        swarm.ws_url = target.ws_url
        client = await login(target.base, target.password, timeout=120)
        await asyncio.sleep(2)
        rss0 = target.sample().rss_bytes
        before = await _snapshot(target, 1)
        await swarm.connect(host_ids(agents), parallel=16)
        await asyncio.sleep(settle_s)  # every agent has sent a status or two
        rss1 = target.sample().rss_bytes
        after = await _snapshot(target, 2)
    finally:
        if client is not None:
            await client.aclose()
        await swarm.close()
        target.stop()
    by_file = after.compare_to(before, "filename")
    by_line = after.compare_to(before, "lineno")
    total = sum(d.size_diff for d in by_file)
    result: dict[str, Any] = {
        "agents": agents,
        "settle_s": settle_s,
        "traced_bytes_per_agent": round(total / agents),
        "traced_blocks_per_agent": round(sum(d.count_diff for d in by_file) / agents, 1),
        "rss_kib_per_agent_under_tracemalloc": round((rss1 - rss0) / 1024 / agents, 1),
        "by_file": [
            {
                "file": _where(d.traceback[0].filename),
                "bytes_per_agent": round(d.size_diff / agents),
                "blocks_per_agent": round(d.count_diff / agents, 1),
            }
            for d in by_file[:top]
        ],
        "by_line": [
            {
                "line": f"{_where(d.traceback[0].filename)}:{d.traceback[0].lineno}",
                "bytes_per_agent": round(d.size_diff / agents),
            }
            for d in by_line[:top]
        ],
    }
    # A run whose dashboard logged errors measured their tracebacks too (linecache, …).
    log = (root / "dashboard.log").read_text(errors="replace").splitlines()
    result["dashboard_log_problems"] = sorted(
        {line[:200] for line in log if "Traceback" in line or "ERROR" in line or "WARN" in line}
    )[:20]
    if frames > 1:
        result["by_traceback"] = [
            {"bytes_per_agent": round(d.size_diff / agents), "frames": _frames(d.traceback)}
            for d in after.compare_to(before, "traceback")[:top]
        ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=12.0, help="seconds after connecting")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--frames", type=int, default=1, help="frames kept per allocation")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args()
    raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="nixfleet-connmem-"))
    try:
        result = asyncio.run(
            measure(tmp / "fleet", args.agents, args.settle, args.top, args.frames)
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_1_5_15"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"traced: {result['traced_bytes_per_agent'] / 1024:.1f} KiB per agent", file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
