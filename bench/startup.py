"""Start-up: `nixfleet serve` until it serves /health, and an agent until it is connected.

Run from the repository root:  python -m bench.startup [--runs 5] [--as-is]

0. nixfleet's own modules are compiled to bytecode first, as installing the package (pip,
   Nix) does; `--as-is` skips that, so with PYTHONDONTWRITEBYTECODE set every start compiles
   them from source again (about 140 modules, 0.1-0.2 s of CPU).
1. A demo fleet (nixfleet.demo.run.prepare: config repo, secrets, 2 hosts) in a temp dir;
   the dashboard is started once to create and migrate its database, then stopped.
2. `runs` times on that existing database: start `nixfleet serve`, poll /health every
   10 ms; the time from spawning the process to the first 200, and the CPU time the
   process had used by then (from /proc: steadier than the wall clock on a busy machine);
   its resident memory 2 s later (the floor: no agent, no browser); then the first page
   (GET /login: Jinja is loaded for it), its time and CPU, and the RSS after it.
3. With the dashboard up, `runs` times: start the real agent (`nixfleet agent`, as the demo
   does), poll the host's `online` every 10 ms through the API; the time from spawning it
   to online, its CPU time by then, and its resident memory (VmRSS) 5 s later, idle and
   connected. The first start clones the config repo; the later ones find it.
4. Print one JSON object (also written to bench/results/startup.json). Everything started
   is stopped in a finally.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import nixfleet
from bench.stats import machine, summary
from bench.target import login, proc_sample
from nixfleet.demo.run import DemoFleet, prepare, start_agent

RESULTS = Path(__file__).parent / "results" / "startup.json"
POLL_S = 0.01


def _serve(fleet: DemoFleet, port: int) -> subprocess.Popen[bytes]:
    out = (fleet.root / "dashboard.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "nixfleet", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        env={**os.environ, **fleet.env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def serve_ready(fleet: DemoFleet, port: int, timeout: float = 30) -> tuple[Any, float, float]:
    """Start the dashboard; return (process, seconds to /health 200, CPU seconds by then)."""
    t0 = time.monotonic()
    proc = _serve(fleet, port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
        while time.monotonic() - t0 < timeout:
            try:
                if client.get("/health").status_code == 200:
                    ready = time.monotonic() - t0
                    return proc, ready, proc_sample(proc.pid).cpu_s
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("bench: the dashboard exited; see dashboard.log")
            time.sleep(POLL_S)
    _stop(proc)
    raise RuntimeError("bench: the dashboard was not ready in time")


def first_page(proc: subprocess.Popen[bytes], port: int) -> dict[str, float]:
    """Return the floor (RSS 2 s after ready), then the first page's time, CPU and RSS."""
    time.sleep(2)
    floor = _rss_kib(proc.pid) / 1024
    before = proc_sample(proc.pid).cpu_s
    t0 = time.monotonic()
    res = httpx.get(f"http://127.0.0.1:{port}/login", timeout=10)
    res.raise_for_status()
    took = time.monotonic() - t0
    return {
        "floor_rss_mib": round(floor, 1),
        "first_page_s": round(took, 3),
        "first_page_cpu_s": round(proc_sample(proc.pid).cpu_s - before, 3),
        "after_page_rss_mib": round(_rss_kib(proc.pid) / 1024, 1),
    }


def compile_package() -> None:
    """Write the bytecode of nixfleet's modules, as installing the package does."""
    compileall.compile_dir(str(Path(nixfleet.__file__).parent), quiet=1)


async def _online(client: httpx.AsyncClient, host_id: str) -> bool:
    res = await client.get("/api/hosts")
    if res.status_code != 200:  # e.g. the API's rate limit: not yet
        await asyncio.sleep(0.2)
        return False
    return any(h["id"] == host_id and h["online"] for h in res.json()["hosts"])


async def agent_connected(fleet: DemoFleet, port: int, runs: int) -> list[dict[str, Any]]:
    client = await login(f"http://127.0.0.1:{port}", fleet.password)
    host = fleet.hosts[0]
    out = []
    try:
        for i in range(runs):
            t0 = time.monotonic()
            proc = start_agent(fleet, host, port, 0)
            try:
                while time.monotonic() - t0 < 60:
                    if await _online(client, host.host_id):
                        break
                    if proc.poll() is not None:
                        raise RuntimeError("bench: the agent exited; see its agent.log")
                    await asyncio.sleep(POLL_S)
                else:
                    raise RuntimeError("bench: the agent did not connect in time")
                connected = time.monotonic() - t0
                cpu = proc_sample(proc.pid).cpu_s
                await asyncio.sleep(5)
                out.append(
                    {
                        "run": i + 1,
                        "clone": i == 0,
                        "connected_s": round(connected, 3),
                        "cpu_s": round(cpu, 3),
                        "idle_rss_mib": round(_rss_kib(proc.pid) / 1024, 1),
                    }
                )
            finally:
                _stop(proc)
            # The dashboard sees it go before the next start counts.
            while await _online(client, host.host_id):
                await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    return out


def run(runs: int, as_is: bool = False) -> dict[str, Any]:
    if not as_is:
        compile_package()
    tmp = Path(tempfile.mkdtemp(prefix="nixfleet-startup-"))
    load_before = os.getloadavg()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fleet = prepare(tmp / "fleet", 2)
        port = _free_port()
        proc, first, _ = serve_ready(fleet, port)  # creates and migrates the database
        _stop(proc)
        serve = []
        for _ in range(runs):
            proc, ready, cpu = serve_ready(fleet, port)
            try:
                page = first_page(proc, port)
            finally:
                _stop(proc)
            serve.append({"ready_s": round(ready, 3), "cpu_s": round(cpu, 3), **page})
        proc, _, _ = serve_ready(fleet, port)
        procs.append(proc)
        agents = asyncio.run(agent_connected(fleet, port, runs))
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "startup",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "bytecode": "as found" if as_is else "compiled",
        "serve_first_start_s": round(first, 3),
        "serve": serve,
        "serve_ready_ms": summary([s["ready_s"] for s in serve]),
        "serve_cpu_ms": summary([s["cpu_s"] for s in serve]),
        "floor_rss_mib_p50": _median([s["floor_rss_mib"] for s in serve]),
        "first_page_ms": summary([s["first_page_s"] for s in serve]),
        "first_page_cpu_ms": summary([s["first_page_cpu_s"] for s in serve]),
        "agent": agents,
        "agent_connected_ms": summary([a["connected_s"] for a in agents[1:]]),
        "agent_cpu_ms": summary([a["cpu_s"] for a in agents[1:]]),
        "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()},
    }


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--as-is", action="store_true", help="do not compile nixfleet's bytecode first"
    )
    args = parser.parse_args()
    result = run(args.runs, args.as_is)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
