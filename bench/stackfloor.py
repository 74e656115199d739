"""`python -m bench.stackfloor`: the resident memory of the smallest service made of the
dashboard's own libraries, layer by layer, beside the dashboard itself.

Each stage is a fresh interpreter that serves one route (`GET /health`) from uvicorn on a
loopback port, as `nixfleet serve` does (httptools, uvloop, one pre-bound socket), and adds
one library the dashboard is built on:

1. `uvicorn`: a bare ASGI callable;
2. `+ fastapi`: the same route as a FastAPI app (pydantic, starlette, FastAPI's
   telemetry API);
3. `+ sqlalchemy`: the route runs `SELECT 1` on an SQLite file through SQLAlchemy Core
   with aiosqlite (the engine SQLAlchemy's async layer uses, without its ORM);
4. `+ settings`: a pydantic-settings object read at start, as the dashboard's is.

Then `nixfleet serve` itself, through `bench.startup`'s set-up (two hosts, none connected). RSS is
read 2 s after `/health` first answers (the figure `bench.startup` calls the floor). What
the last stage holds is what no cut inside NixFleet can go below without changing library.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.startup import RESULTS

_SERVICE = r"""
import asyncio, os, socket, sys
stage = int(sys.argv[1]); port_file = sys.argv[2]; db = sys.argv[3]
import uvicorn

if stage == 1:
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})
else:
    from fastapi import FastAPI
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    if stage >= 3:
        from sqlalchemy import create_engine, text
        from sqlalchemy.util import greenlet_spawn
        engine = create_engine(f"sqlite+aiosqlite:///{db}", _is_async=True)

        def one() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT 1")).scalar_one())
    if stage >= 4:
        from pydantic_settings import BaseSettings, SettingsConfigDict

        class Settings(BaseSettings):
            model_config = SettingsConfigDict(env_prefix="FLOOR_")
            name: str = "floor"
            port: int = 0

        settings = Settings()

    @app.get("/health")
    async def health() -> dict[str, object]:
        if stage >= 3:
            return {"ok": await greenlet_spawn(one)}
        return {"ok": True}

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(128)
open(port_file, "w").write(str(sock.getsockname()[1]))
config = uvicorn.Config(app, http="httptools", loop="uvloop", ws="none", log_level="warning",
                        lifespan="off")
uvicorn.Server(config).run(sockets=[sock])
"""

STAGES = {1: "uvicorn", 2: "+ fastapi", 3: "+ sqlalchemy", 4: "+ settings"}


def _rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split("VmRSS:")[1].split()[0]) / 1024


def stage_floor(stage: int, root: Path) -> float:
    """Return the RSS (MiB) of stage's service 2 s after its /health first answered."""
    port_file = root / f"port-{stage}"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVICE, str(stage), str(port_file), str(root / "floor.db")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"stage {stage} exited: {proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            if port_file.exists() and port_file.read_text():
                port = int(port_file.read_text())
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"stage {stage} did not answer in time")
        time.sleep(2)
        return round(_rss_mib(proc.pid), 1)
    finally:
        proc.terminate()
        proc.wait(10)


def dashboard_floor(root: Path) -> float:
    """Return `nixfleet serve`'s floor (bench.startup's: two hosts, none connected)."""
    from bench.startup import _free_port, _stop, first_page, prepare, serve_ready

    fleet = prepare(root / "fleet", 2)
    port = _free_port()
    proc, _ready, _cpu = serve_ready(fleet, port)  # creates and migrates the database
    _stop(proc)
    proc, _ready, _cpu = serve_ready(fleet, port)
    try:
        return float(first_page(proc, port)["floor_rss_mib"])
    finally:
        _stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS.parent / "stackfloor.json")
    args = parser.parse_args()
    out: dict[str, list[float]] = {name: [] for name in STAGES.values()}
    out["nixfleet serve"] = []
    with tempfile.TemporaryDirectory(prefix="nixfleet-stack-") as tmp:
        for _ in range(args.runs):
            for stage, name in STAGES.items():
                out[name].append(stage_floor(stage, Path(tmp)))
            out["nixfleet serve"].append(dashboard_floor(Path(tempfile.mkdtemp(dir=tmp))))
    result = {"load_avg": os.getloadavg(), "rss_mib": out}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| stage | RSS MiB, 2 s after ready (each run) |\n|---|---|")
    for name, values in out.items():
        print(f"| {name} | {' / '.join(f'{v:.1f}' for v in values)} |")


if __name__ == "__main__":
    main()
