"""Click to process start: time from the HTTP POST of a command to the agent's process.

Run from the repository root:  python -m bench.dispatch_latency

1. Prepare a demo fleet of 20 hosts in a temp dir and replace each host's tests with one
   probe script, T01, that appends "<host> <epoch seconds> <command id>" to a shared file
   the moment it starts (bash's $EPOCHREALTIME, read before anything else runs).
2. Start the dashboard and 20 real agents (the demo's start_dashboard / start_agent, so
   every command really goes dashboard -> WebSocket -> agent -> detached runner -> script).
3. Issue 100 `test` commands, round-robin over the hosts, 5 in flight at a time: worker w
   of 5 sends commands w, w+5, w+10, ... so command i goes to host i % 20 and a worker
   always owns the same 4 hosts; it sends its next command only after the previous one
   finished (learned from the dashboard's SSE stream, as a browser does). No host ever
   has two commands at once, so no command waits in the queue behind another.
4. Per command, from one clock (everything runs on this machine): the wall-clock time just
   before the POST, the command's created_at / dispatched_at / started_at as stored by the
   dashboard (started_at is the agent's Started time, taken when it journals the plan just
   before spawning the detached runner) and the time the probe wrote.
5. Print a Markdown table (p50 / p99 / max in ms) and write the JSON to
   bench/results/dispatch_latency.json. Everything started is stopped in a finally.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.stats import machine, percentile
from nixfleet.demo.configrepo import WORK_NAME, commit_change
from nixfleet.demo.run import DemoFleet, prepare, start_agent, start_dashboard

RESULTS = Path(__file__).parent / "results" / "dispatch_latency.json"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out", "lost"})
RUN_BUDGET_S = 170  # the whole run, setup included, stays under 3 minutes
COMMAND_TIMEOUT_S = 30
MARK_VAR = "NIXFLEET_BENCH_MARK"

PROBE = """#!/usr/bin/env bash
# dispatch_latency probe for {host}: record the moment the runner started this process.
t=${{EPOCHREALTIME:-$(date +%s.%N)}}
printf '%s %s %s\\n' "$NIXFLEET_HOST_ID" "${{t/,/.}}" "$NIXFLEET_COMMAND_ID" >> {probe_file}
echo "probe: started at $t"
"""


@dataclass
class Sample:
    """One command: every timestamp is time.time() on this machine, in seconds."""

    command_id: str
    host_id: str
    worker: int
    post_at: float  # just before the HTTP POST (the click)
    response_at: float  # the 202 arrived
    created_at: float = 0.0  # dashboard stored the queued command
    dispatched_at: float = 0.0  # dashboard claimed it and sent it over the WebSocket
    started_at: float = 0.0  # agent journalled it, about to spawn the detached runner
    process_at: float = 0.0  # the probe script was running (what we measure)
    finished_at: float = 0.0
    state: str = ""


# --- fleet ------------------------------------------------------------------------------
def install_probes(fleet: DemoFleet, probe_file: Path) -> None:
    """Replace every host's tests with the probe T01, commit and push (before agents clone)."""
    work = fleet.root / "config" / WORK_NAME
    for host in fleet.hosts:
        tests = work / "hosts" / host.host_id / "tests"
        others = [p.name for p in tests.glob("T*.sh") if p.name != "T01-ssh.sh"]
        if others:  # staged here, committed by commit_change below
            subprocess.run(["git", "rm", "-q", "--", *others], cwd=tests, check=True)
        # T01-ssh.sh exists with mode 0755, so overwriting it keeps the exec bit in git.
        text = PROBE.format(host=host.host_id, probe_file=shlex.quote(str(probe_file)))
        commit_change(
            fleet.root / "config",
            f"bench: probe test for {host.host_id}",
            f"hosts/{host.host_id}/tests/T01-ssh.sh",
            text,
        )
        if not os.access(tests / "T01-ssh.sh", os.X_OK):
            raise RuntimeError(f"bench: {tests / 'T01-ssh.sh'} lost its exec bit")


def marked_pids(mark: str) -> set[int]:
    """Return pids whose environment carries our mark (agents, detached runners, probes)."""
    found = set()
    needle = f"{MARK_VAR}={mark}".encode()
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            if needle in (proc_dir / "environ").read_bytes().split(b"\0"):
                found.add(int(proc_dir.name))
        except OSError:
            continue
    return found


def stop_all(procs: list[subprocess.Popen[bytes]], mark: str) -> None:
    """Terminate what we started; then kill anything still carrying our mark."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in marked_pids(mark):  # detached runners outlive their agent by design
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the dashboard's API ----------------------------------------------------------------
async def login(base: str, password: str) -> httpx.AsyncClient:
    """Return a client holding an admin session and sending its CSRF token."""
    client = httpx.AsyncClient(base_url=base, timeout=15, follow_redirects=False)
    res = await client.post("/login", data={"username": "admin", "password": password})
    if res.status_code != 303:
        raise RuntimeError(f"bench: login failed: HTTP {res.status_code}")
    page = (await client.get("/")).text
    client.headers["X-CSRF-Token"] = page.split('name="csrf-token" content="')[1].split('"')[0]
    return client


async def wait_online(client: httpx.AsyncClient, host_ids: list[str], timeout: float) -> float:
    """Return seconds waited until every host is online."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        hosts = {h["id"]: h for h in (await client.get("/api/hosts")).json()["hosts"]}
        if all(hosts[h]["online"] for h in host_ids):
            return time.monotonic() - start
        await asyncio.sleep(0.2)
    offline = [h for h in host_ids if not hosts[h]["online"]]
    raise RuntimeError(f"bench: hosts still offline after {timeout} s: {offline}")


class Watcher:
    """Follow /api/events (as a browser tab does) and tell waiters when a command ends."""

    def __init__(self) -> None:
        self.done: dict[str, asyncio.Event] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.ready = asyncio.Event()

    def _event(self, command_id: str) -> asyncio.Event:
        return self.done.setdefault(command_id, asyncio.Event())

    def _update(self, cmd: dict[str, Any]) -> None:
        self.rows[cmd["id"]] = cmd
        if cmd["state"] in TERMINAL:
            self._event(cmd["id"]).set()

    async def follow(self, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/api/events", timeout=None) as res:
            kind, data = "", ""
            async for line in res.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and data:
                    payload = json.loads(data)
                    if kind in ("snapshot", "resync"):
                        for cmd in payload["commands"]:
                            self._update(cmd)
                        self.ready.set()
                    elif kind == "command":
                        self._update(payload["command"])
                    kind, data = "", ""

    async def wait(self, command_id: str, timeout: float) -> dict[str, Any]:
        await asyncio.wait_for(self._event(command_id).wait(), timeout)
        return self.rows[command_id]


async def drive(
    client: httpx.AsyncClient,
    watcher: Watcher,
    host_ids: list[str],
    commands: int,
    in_flight: int,
) -> list[Sample]:
    """Send the commands round-robin, in_flight workers at a time; return the samples."""
    samples: list[Sample] = []

    async def worker(w: int) -> None:
        for i in range(w, commands, in_flight):
            host_id = host_ids[i % len(host_ids)]
            post_at = time.time()
            res = await client.post(f"/api/hosts/{host_id}/command", json={"command": "test"})
            response_at = time.time()
            if res.status_code != 202:
                raise RuntimeError(f"bench: POST for {host_id}: HTTP {res.status_code} {res.text}")
            cid = res.json()["command_id"]
            samples.append(Sample(cid, host_id, w, post_at, response_at))
            row = await watcher.wait(cid, COMMAND_TIMEOUT_S)
            if row["state"] != "succeeded":
                raise RuntimeError(f"bench: command {cid} on {host_id} ended {row['state']}")

    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    return samples


async def measure(
    base: str, password: str, host_ids: list[str], commands: int, in_flight: int
) -> tuple[list[Sample], float]:
    """Return the samples (command rows filled in) and the seconds spent waiting for agents."""
    client = await login(base, password)
    watcher = Watcher()
    follower = asyncio.create_task(watcher.follow(client))
    try:
        online_s = await wait_online(client, host_ids, timeout=60)
        await asyncio.wait_for(watcher.ready.wait(), 10)
        samples = await drive(client, watcher, host_ids, commands, in_flight)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await follower
    for s in samples:  # after the measurement, so these reads add no load during it
        row = (await client.get(f"/api/commands/{s.command_id}")).json()
        s.created_at = row["created_at"]
        s.dispatched_at = row["dispatched_at"]
        s.started_at = row["started_at"]
        s.finished_at = row["finished_at"]
        s.state = row["state"]
    await client.aclose()
    return samples, online_s


# --- statistics -------------------------------------------------------------------------


SEGMENTS = [
    # (key, label, start field, end field)
    ("click_to_process", "**POST → process start** (click to process)", "post_at", "process_at"),
    ("post_to_started_at", "POST → `started_at` (agent's Started)", "post_at", "started_at"),
    ("started_at_to_process", "`started_at` → process start (runner)", "started_at", "process_at"),
    ("post_to_created", "POST → `created_at` (HTTP + auth + insert)", "post_at", "created_at"),
    ("created_to_dispatched", "`created_at` → `dispatched_at` (hub claim)", "created_at",
     "dispatched_at"),
    ("dispatched_to_started_at", "`dispatched_at` → `started_at` (WS + agent)", "dispatched_at",
     "started_at"),
    ("post_to_response", "POST → 202 received", "post_at", "response_at"),
]  # fmt: skip


def summarize(samples: list[Sample]) -> dict[str, dict[str, float]]:
    out = {}
    for key, _, start, end in SEGMENTS:
        ms = [(getattr(s, end) - getattr(s, start)) * 1000 for s in samples]
        out[key] = {
            "p50_ms": round(percentile(ms, 50), 1),
            "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1),
            "min_ms": round(min(ms), 1),
            "mean_ms": round(sum(ms) / len(ms), 1),
        }
    return out


def markdown(summary: dict[str, dict[str, float]]) -> str:
    rows = ["| segment | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|"]
    for key, label, _, _ in SEGMENTS:
        s = summary[key]
        rows.append(f"| {label} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} |")
    return "\n".join(rows)


# --- main -------------------------------------------------------------------------------
def run(hosts: int, commands: int, in_flight: int, out: Path, keep: bool) -> dict[str, Any]:
    if in_flight > hosts:
        raise SystemExit("bench: --in-flight must not exceed --hosts (one command per host)")
    t0 = time.monotonic()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="nixfleet-bench-"))
    mark = uuid.uuid4().hex
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fleet = prepare(tmp / "fleet", hosts, failing=())
        probe_file = tmp / "process-starts.log"
        probe_file.touch()
        install_probes(fleet, probe_file)
        server, port = start_dashboard(fleet, 0)
        procs.append(server)
        for host in fleet.hosts:
            procs.append(start_agent(fleet, host, port, 0, {MARK_VAR: mark}))
        host_ids = [h.host_id for h in fleet.hosts]
        budget = RUN_BUDGET_S - (time.monotonic() - t0)
        samples, online_s = asyncio.run(
            asyncio.wait_for(
                measure(f"http://127.0.0.1:{port}", fleet.password, host_ids, commands, in_flight),
                budget,
            )
        )
        starts: dict[str, tuple[str, float]] = {}
        for line in probe_file.read_text().splitlines():
            host_id, at, cid = line.split()
            starts[cid] = (host_id, float(at))
        for s in samples:
            host_id, s.process_at = starts[s.command_id]
            if host_id != s.host_id:
                raise RuntimeError(f"bench: {s.command_id} ran on {host_id}, not {s.host_id}")
    finally:
        stop_all(procs, mark)
        if keep:
            print(f"bench: fleet kept in {tmp}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
    summary = summarize(samples)
    result = {
        "benchmark": "dispatch_latency",
        "what": "HTTP POST of a `test` command -> the agent's detached runner starts the script",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "config": {
            "hosts": hosts,
            "commands": commands,
            "in_flight": in_flight,
            "schedule": "round-robin over hosts; one worker per in-flight slot sends its next "
            "command after the previous one finished; no host has two commands at once",
            "build_seconds": 0,
        },
        # Anything else busy on the machine skews the numbers: check these before comparing.
        "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "agents_online_after_s": round(online_s, 2),
        "wall_s": round(time.monotonic() - t0, 1),
        "summary": summary,
        "samples": [asdict(s) for s in sorted(samples, key=lambda s: s.post_at)],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--commands", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the temp fleet (logs)")
    args = parser.parse_args()
    result = run(args.hosts, args.commands, args.in_flight, args.out, args.keep)
    m, c = result["machine"], result["config"]
    print(
        f"{c['commands']} `test` commands, {c['hosts']} agents, {c['in_flight']} in flight; "
        f"{m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}; "
        f"run took {result['wall_s']} s; load average (1 min) "
        f"{result['loadavg_1_5_15']['before'][0]:.2f} before, "
        f"{result['loadavg_1_5_15']['after'][0]:.2f} after\n"
    )
    print(markdown(result["summary"]))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
