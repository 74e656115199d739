"""Agent memory while the dashboard is away and a build keeps printing.

Run from the repository root:  python -m bench.agent_memory [--outage 120] [--rate 400]

1. Prepare a one-host demo fleet in a temp dir; its `nixos-rebuild` is replaced by a build
   that prints `rate` lines a second (about 100 characters each, like Nix's) for the whole
   run, then succeeds.
2. Start the dashboard and the real agent, issue a switch, let it stream for a few seconds.
3. kill -9 the dashboard; sample the agent's resident memory (VmRSS) every second for
   `outage` seconds while the build keeps printing into the journal.
4. Start the dashboard again on the same port and database; time until the command is
   final with every line stored; count lines lost (gaps or a short tail).
5. Print one JSON object (also written to bench/results/agent_memory.json). Everything
   started is stopped in a finally.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.stats import machine
from nixfleet.demo.run import DemoFleet, prepare, start_agent, start_dashboard

RESULTS = Path(__file__).parent / "results" / "agent_memory.json"
MARK_VAR = "NIXFLEET_BENCH_MARK"
FINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out", "lost"})

BUILD = """#!/usr/bin/env python3
# agent_memory: a build that prints {rate} lines a second for {seconds} seconds.
import sys, time
start = time.monotonic()
n = 0
while time.monotonic() - start < {seconds}:
    n += 1
    print(f"building '/nix/store/{{n:032d}}-python3.12-package-{{n}}.drv' (step {{n}})...")
    if n % 20 == 0:
        sys.stdout.flush()
        time.sleep(max(0.0, start + n / {rate} - time.monotonic()))
sys.stdout.flush()
print(f"printed {{n}} lines", file=sys.stderr)
"""


def marked(mark: str) -> set[int]:
    """Return the pids whose environment carries this run's mark (children inherit it)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue
        if f"{MARK_VAR}={mark}".encode() in env.split(b"\0"):
            found.add(int(proc.name))
    return found


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def login(base: str, password: str) -> tuple[httpx.Client, str]:
    http = httpx.Client(base_url=base, timeout=30)
    http.post("/login", data={"username": "admin", "password": password})
    csrf = http.get("/").text.split('name="csrf-token" content="')[1].split('"')[0]
    return http, csrf


def all_lines(http: httpx.Client, cid: str) -> list[int]:
    seqs: list[int] = []
    after: int | None = 0
    while after is not None:
        page = http.get(f"/api/commands/{cid}/output", params={"after_seq": after, "limit": 5000})
        if page.status_code == 404:  # a dashboard from before the output API
            return [ln["seq"] for ln in http.get(f"/api/commands/{cid}").json()["output"]]
        body = page.json()
        seqs += [ln["seq"] for ln in body["lines"]]
        after = body["next"]
    return seqs


def run(outage_s: float, rate: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nixfleet-mem-") as tmp:
        fleet: DemoFleet = prepare(Path(tmp), 1)
        build = fleet.root / "bin" / "nixos-rebuild"
        build.write_text(BUILD.format(rate=rate, seconds=outage_s + 15))
        build.chmod(0o755)
        procs: list[subprocess.Popen[bytes]] = []
        mark = uuid.uuid4().hex
        try:
            server, port = start_dashboard(fleet, 0)
            procs.append(server)
            host = fleet.hosts[0]
            agent = start_agent(fleet, host, port, 1.0, {MARK_VAR: mark})
            procs.append(agent)
            http, csrf = login(f"http://127.0.0.1:{port}", fleet.password)
            deadline = time.monotonic() + 30
            while not http.get("/api/hosts").json()["hosts"][0]["online"]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the agent did not connect")
                time.sleep(0.2)
            res = http.post(
                f"/api/hosts/{host.host_id}/command",
                json={"command": "switch"},
                headers={"X-CSRF-Token": csrf},
            )
            cid = res.json()["command_id"]
            time.sleep(5)
            before = rss_mib(agent.pid)
            server.send_signal(signal.SIGKILL)
            server.wait()
            samples = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < outage_s:
                samples.append(round(rss_mib(agent.pid), 1))
                time.sleep(1)
            server, _ = start_dashboard(fleet, port)
            procs.append(server)
            back = time.monotonic()
            http, csrf = login(f"http://127.0.0.1:{port}", fleet.password)
            while http.get(f"/api/commands/{cid}").json()["state"] not in FINAL:
                if time.monotonic() - back > outage_s + 120:
                    raise RuntimeError("the command did not finish after the outage")
                time.sleep(0.5)
            recovered_s = time.monotonic() - back
            cmd = http.get(f"/api/commands/{cid}").json()
            seqs = all_lines(http, cid)
            last = max(seqs, default=0)
            return {
                "outage_s": outage_s,
                "lines_per_s": rate,
                "lines_during_outage": int(outage_s * rate),
                "agent_rss_before_outage_mib": round(before, 1),
                "agent_rss_max_mib": max(samples),
                "agent_rss_end_of_outage_mib": samples[-1],
                "agent_rss_samples_mib": samples[:: max(1, len(samples) // 12)],
                "state": cmd["state"],
                "lines_stored": len(seqs),
                "lines_lost": last - len(set(seqs)),
                "recover_s": round(recovered_s, 1),
                "machine": machine(),
            }
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for pid in marked(mark):  # the detached runner and its build outlive the agent
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=120.0, help="seconds without dashboard")
    parser.add_argument("--rate", type=int, default=400, help="build output lines per second")
    args = parser.parse_args()
    result = run(args.outage, args.rate)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    os.sync()


if __name__ == "__main__":
    main()
