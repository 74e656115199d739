"""The agent's own share of start → online: spawning `nixfleet agent` until its hello.

Run from the repository root:  python -m bench.agent_hello [--runs 5]

`bench.startup` times start → online through a real dashboard (its handshake, the hello
stored, the API polled); this times only the agent's part, against a bare WebSocket server
in this process that answers `welcome` and nothing else:

1. Each run: a fresh state dir, no config repo (so no git work); spawn the agent with a
   `ws://` URL on loopback; the time from spawning it to the first frame it sends (hello),
   and its CPU time by then (from /proc, steadier than the wall clock on a busy machine).
2. Print one JSON object with each run, p50/p99/max and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from bench.stats import machine, summary


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spawn(url: str, root: Path) -> subprocess.Popen[bytes]:
    (root / "system").mkdir()
    token = root / "token"
    token.write_text("nfa_bench-token")
    token.chmod(0o600)
    return subprocess.Popen(
        [sys.executable, "-m", "nixfleet", "agent", "--url", url, "--allow-insecure",
         "--host-id", "atlas", "--token-file", str(token), "--repo-dir", str(root / "repo"),
         "--state-dir", str(root / "state"), "--system-dir", str(root / "system"),
         "--systemd-run", "no", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def one_run() -> dict[str, float]:
    """Return the wall and CPU seconds from spawning one agent to its hello."""
    hello: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def session(ws: ServerConnection) -> None:
        await ws.recv()
        if not hello.done():
            hello.set_result(time.monotonic())
        await ws.send(json.dumps({"type": "welcome", "heartbeat_s": 30, "branch": "main"}))
        await ws.wait_closed()

    async with serve(session, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with tempfile.TemporaryDirectory(prefix="nixfleet-hello-") as tmp:
            start = time.monotonic()
            proc = _spawn(f"ws://127.0.0.1:{port}", Path(tmp))
            try:
                at = await asyncio.wait_for(hello, 30)
                cpu = _cpu_s(proc.pid)
            finally:
                proc.terminate()
                proc.wait(10)
    return {"hello_s": round(at - start, 3), "cpu_s": round(cpu, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs = [asyncio.run(one_run()) for _ in range(args.runs)]
    result: dict[str, Any] = {
        "benchmark": "agent_hello",
        "machine": machine(),
        "runs": runs,
        "hello_ms": summary([r["hello_s"] for r in runs]),
        "cpu_ms": summary([r["cpu_s"] for r in runs]),
        "loadavg_1_5_15": {"before": load_before, "after": os.getloadavg()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
