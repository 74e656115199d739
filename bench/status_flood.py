"""Dashboard memory while one host floods it with statuses.

Run from the repository root:  python -m bench.status_flood [--valid 1000] [--refused 300]

1. Prepare a two-host demo fleet in a temp dir and start the dashboard (no browser open).
2. As atlas, with its real token: send `valid` heartbeats of the largest status the bounds
   allow (every text field at its maximum length), on one connection.
3. Then `refused` times: connect, say hello, send a status of about 1 MB (a hostname of a
   million characters), which is refused with close 4400.
4. Sample the dashboard's resident memory (VmRSS) before and after each part, and check
   that the host list still answers; print one JSON object (also written to
   bench/results/status_flood.json). Everything started is stopped in a finally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import websockets

from bench.agent_memory import login, rss_mib
from bench.stats import machine
from nixfleet.demo.run import prepare, start_dashboard

RESULTS = Path(__file__).parent / "results" / "status_flood.json"

LARGEST = {
    "hostname": "h" * 255,
    "os_kind": "nixos",
    "os_version": "v" * 64,
    "nixpkgs_version": "n" * 64,
    "generation": 2**31 - 1,
    "current_system": "/nix/store/" + "c" * 1013,
    "booted_system": "/nix/store/" + "b" * 1013,
    "agent_version": "a" * 64,
    "commit": "f" * 64,
    "lock_hash": "l" * 64,
    "lock_modified": 4_000_000_000,
    "uptime_s": 1e9,
    "load1": 1e9,
    "mem_total": 2**63 - 1,
    "mem_available": 2**63 - 1,
}


async def session(url: str, headers: dict[str, str], frames: list[str]) -> int | None:
    """Say hello, send frames, return the close code (None if the dashboard kept us)."""
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        hello = {"type": "hello", "protocol": 1, "host_id": "atlas", "agent_version": "x"}
        await ws.send(json.dumps({**hello, "status": {"hostname": "atlas"}}))
        await ws.recv()  # welcome
        try:
            for frame in frames:
                await ws.send(frame)
            await ws.send(json.dumps({"type": "status", "status": {}, "ref": 1}))
            while json.loads(await asyncio.wait_for(ws.recv(), 30)).get("type") != "status_ack":
                pass
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
    return None


async def flood(base: str, token: str, valid: int, refused: int, pid: int) -> dict[str, Any]:
    url = base.replace("http://", "ws://") + "/api/agent/ws"
    headers = {"Authorization": f"Bearer {token}", "X-NixFleet-Host": "atlas"}
    out: dict[str, Any] = {"rss_start_mib": round(rss_mib(pid), 1)}
    big = json.dumps({"type": "status", "status": LARGEST})
    out["largest_valid_status_bytes"] = len(big)
    assert await session(url, headers, [big] * valid) is None
    out["rss_after_valid_mib"] = round(rss_mib(pid), 1)
    huge = json.dumps({"type": "status", "status": {"hostname": "h" * 1_000_000}})
    codes = [await session(url, headers, [huge]) for _ in range(refused)]
    out["refused_close_codes"] = sorted(set(codes), key=str)
    out["rss_after_refused_mib"] = round(rss_mib(pid), 1)
    return out


def run(valid: int, refused: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nixfleet-flood-") as tmp:
        fleet = prepare(Path(tmp), 2)
        server, port = start_dashboard(fleet, 0)
        try:
            base = f"http://127.0.0.1:{port}"
            token = fleet.hosts[0].token_file.read_text().strip()
            result = asyncio.run(flood(base, token, valid, refused, server.pid))
            http, _ = login(base, fleet.password)
            res = http.get("/api/hosts")
            stored = next(h for h in res.json()["hosts"] if h["id"] == "atlas")["status"]
            result |= {
                "valid_statuses": valid,
                "refused_statuses": refused,
                "hosts_status_code": res.status_code,
                "stored_status_bytes": len(json.dumps(stored)),
                "machine": machine(),
            }
            return result
        except httpx.HTTPError as exc:
            raise RuntimeError(f"the dashboard stopped answering: {exc}") from exc
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--valid", type=int, default=1000, help="largest valid statuses")
    parser.add_argument("--refused", type=int, default=300, help="1 MB statuses (refused)")
    args = parser.parse_args()
    result = run(args.valid, args.refused)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
