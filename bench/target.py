"""The dashboard under test: a `nixfleet serve` process on loopback with a fresh SQLite file.

1. `Target.create(root, hosts)` writes generated secrets, migrates the database and adds the
   hosts through `Fleet.add_host` (the code path the CLI and the API use, so the tokens are
   hashed exactly as the dashboard expects); it returns the tokens, kept only in memory.
2. `start()` runs the dashboard as a child process and waits for its port file.
3. `sample()` reads the process's RSS and CPU time from /proc, so the numbers are the
   dashboard's own and not the load generator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import insert

from nixfleet.config import load_settings
from nixfleet.dashboard.fleet.service import Fleet
from nixfleet.security.passwords import hash_password
from nixfleet.security.tokens import new_agent_token, new_secret
from nixfleet.storage.bus import LocalBus
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade
from nixfleet.storage.tables import hosts

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def host_ids(count: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(count)]


@dataclass
class ProcSample:
    at: float  # time.monotonic()
    rss_bytes: int
    cpu_s: float  # user + system


def proc_sample(pid: int) -> ProcSample:
    """Return the RSS and the CPU seconds used so far by pid."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return ProcSample(time.monotonic(), rss, cpu)


def cpu_percent(a: ProcSample, b: ProcSample) -> float:
    return 100 * (b.cpu_s - a.cpu_s) / max(b.at - a.at, 1e-9)


@dataclass
class Target:
    root: Path
    env: dict[str, str]
    password: str
    tokens: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @classmethod
    def create(cls, root: Path, count: int, extra_env: dict[str, str] | None = None) -> Target:
        root.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(12)
        env = {
            "NIXFLEET_DATA_DIR": str(root / "dashboard"),
            "NIXFLEET_ADMIN_PASSWORD_HASH": hash_password(password),
            "NIXFLEET_AGENT_TOKEN_HASH_SECRET": new_secret(),
            "NIXFLEET_SECURE_COOKIES": "false",
            # A bulk request naming 10,000 hosts is about 150 KB of JSON.
            "NIXFLEET_MAX_BODY_BYTES": str(1 << 20),
            "NIXFLEET_SESSION_SECRETS": new_secret(),
            # Every simulated agent and browser comes from 127.0.0.1: the per-address limits
            # that protect a real dashboard would measure themselves here, not the dashboard.
            "NIXFLEET_RATE_LIMIT_AGENT_WS": "off",
            "NIXFLEET_RATE_LIMIT_API": "off",
            "NIXFLEET_RATE_LIMIT_EVENTS": "off",
            "NIXFLEET_SSE_MAX_PER_SESSION": "100000",
            "NIXFLEET_SSE_MAX_PER_ADDRESS": "100000",
            **(extra_env or {}),
        }
        target = cls(root, env, password)
        target.tokens = asyncio.run(_add_hosts(env, host_ids(count)))
        return target

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/agent/ws"

    @property
    def gc_log(self) -> Path:
        return self.root / "gc.json"

    def toggle_profile(self, keep: Path | None = None) -> None:
        """Start, or stop and copy to keep, the dashboard's cProfile (BENCH_PROFILE=1)."""
        assert self.proc is not None
        prof = Path(f"{self.gc_log}.prof")
        prof.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR2)
        if keep is None:
            return
        deadline = time.monotonic() + 30
        while not prof.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # dump_stats writes in one go, but let it finish
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(prof, keep)

    def start(self, gc_probe: bool = False, runner: list[str] | None = None) -> None:
        """Start the dashboard; with gc_probe, every collection it makes is logged.

        runner replaces `nixfleet` as what `python -m` runs (a probe such as bench/mallocprobe.py
        that takes nixfleet's arguments after its own).
        """
        port_file = self.root / "port"
        log = (self.root / "dashboard.log").open("ab")
        if runner is None:
            runner = ["bench.gcprobe", str(self.gc_log)] if gc_probe else ["nixfleet"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *runner, "serve", "--host", "127.0.0.1", "--port", "0",
             "--port-file", str(port_file), "--log-level", "warning"],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text():
                self.port = int(port_file.read_text())
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench: dashboard exited; see {log.name}")
            time.sleep(0.05)
        else:
            raise RuntimeError("bench: dashboard did not start within 60 s")

    async def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base, timeout=5) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/health")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("bench: dashboard never became healthy")

    def sample(self) -> ProcSample:
        assert self.proc is not None
        return proc_sample(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _add_hosts(env: dict[str, str], ids: list[str]) -> dict[str, str]:
    """Return {host id: agent token} after adding the hosts.

    The first host is added with the dashboard's own code (`Fleet.add_host`,
    `rotate_token`); the rest are inserted in batches of 1,000 as rows of the same shape,
    tokens hashed by the same `identity.hash`: one at a time, 20,000 hosts took 6.5
    minutes on PostgreSQL, two transactions each.
    """
    settings = load_settings(**{k.removeprefix("NIXFLEET_").lower(): v for k, v in env.items()})
    await asyncio.to_thread(upgrade, settings.db_url)
    db = Database(settings.db_url)
    fleet = Fleet(settings, db, LocalBus())
    tokens: dict[str, str] = {}
    try:
        if not ids:
            return tokens
        await fleet.add_host(ids[0], {})
        tokens[ids[0]] = await fleet.rotate_token(ids[0])
        now = fleet.clock()
        for start in range(1, len(ids), 1000):
            rows = []
            for h in ids[start : start + 1000]:
                tokens[h] = token = new_agent_token()
                # What add_host, then rotate_token (storage/credentials.py), leave behind.
                digest = fleet.identity.hash(token)
                rows.append(
                    {"id": h, "created_at": now, "token_hash": digest, "identity_state": "active"}
                )
            async with db.engine.begin() as conn:
                await conn.execute(insert(hosts), rows)
        return tokens
    finally:
        await db.close()


async def login(base: str, password: str, timeout: float = 30) -> httpx.AsyncClient:
    """Return a client holding an admin session that sends its CSRF token."""
    client = httpx.AsyncClient(
        base_url=base,
        timeout=timeout,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
    )
    res = await client.post("/login", data={"username": "admin", "password": password})
    if res.status_code != 303:
        raise RuntimeError(f"bench: login failed: HTTP {res.status_code}")
    page = (await client.get("/")).text
    client.headers["X-CSRF-Token"] = page.split('name="csrf-token" content="')[1].split('"')[0]
    return client
