"""`nixfleet demo`: a dashboard and simulated hosts running the real agent, on loopback.

The pieces are public so the test-suite starts its fleets the same way the demo does.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nixfleet.config import load_settings
from nixfleet.dashboard.fleet.service import Fleet
from nixfleet.demo.configrepo import create_config_repo
from nixfleet.security.passwords import hash_password
from nixfleet.security.tokens import new_secret
from nixfleet.storage import hosts as host_store
from nixfleet.storage.bus import LocalBus
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade

FAKEBIN = Path(__file__).parent / "fakebin"
_NAMES = [
    ("atlas", "nixos"),
    ("borealis", "macos"),
    ("cirrus", "nixos"),
    ("dune", "nixos"),
    ("ember", "macos"),
    ("fjord", "nixos"),
]
_LOCATIONS = ["rack A", "home office", "rack B", "basement", "laptop bag", "edge site"]
_COLOURS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2"]


@dataclass
class DemoHost:
    host_id: str
    os_kind: str
    root: Path

    @property
    def token_file(self) -> Path:
        return self.root / "token"


@dataclass
class DemoFleet:
    """A prepared fleet on disk: config repo, secrets, hosts with tokens."""

    root: Path
    repo_url: str
    env: dict[str, str]
    password: str
    hosts: list[DemoHost] = field(default_factory=list)


def demo_hosts(count: int) -> list[tuple[str, str]]:
    """Return count (host id, os kind) pairs: the named six, then numbered ones."""
    names = list(_NAMES[:count])
    for i in range(len(names), count):
        names.append((f"node-{i + 1:02d}", "macos" if i % 3 == 1 else "nixos"))
    return names


def prepare(
    root: Path,
    count: int,
    failing: tuple[str, ...] = ("dune",),
    extra_env: dict[str, str] | None = None,
) -> DemoFleet:
    """Return a fleet on disk under root, with a fresh admin password and agent tokens."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    names = demo_hosts(count)
    secret_file = root / "agent-token-secret"
    session_file = root / "session-secret"
    for path in (secret_file, session_file):
        if not path.exists():
            path.write_text(new_secret())
            path.chmod(0o600)
    bare = root / "config" / "fleet-config.git"
    if not bare.exists():
        create_config_repo(root / "config", names, failing=[f for f in failing if f in dict(names)])
    bindir = root / "bin"
    if not bindir.exists():
        shutil.copytree(FAKEBIN, bindir)
        for tool in ("nixos-rebuild", "darwin-rebuild", "home-manager"):
            (bindir / tool).chmod(0o755)
    password = secrets.token_urlsafe(12)
    env = {
        "NIXFLEET_DEMO": "true",
        "NIXFLEET_DATA_DIR": str(root / "dashboard"),
        "NIXFLEET_ADMIN_PASSWORD_HASH": hash_password(password),
        "NIXFLEET_AGENT_TOKEN_HASH_SECRET_FILE": str(secret_file),
        "NIXFLEET_SESSION_SECRETS_FILE": str(session_file),
        "NIXFLEET_SECURE_COOKIES": "false",
        "NIXFLEET_CONFIG_REPO": str(bare),
        "NIXFLEET_HEARTBEAT_S": "5",
        **(extra_env or {}),
    }
    fleet = DemoFleet(root, str(bare), env, password)
    tokens = asyncio.run(_issue_tokens(env, names))
    for (host_id, os_kind), token in zip(names, tokens, strict=True):
        host = DemoHost(host_id, os_kind, root / "hosts" / host_id)
        (host.root / "system").mkdir(parents=True, exist_ok=True)
        host.token_file.write_text(token)
        host.token_file.chmod(0o600)
        _seed_system(host)
        fleet.hosts.append(host)
    return fleet


async def _issue_tokens(env: dict[str, str], names: list[tuple[str, str]]) -> list[str]:
    """Return one fresh agent token per host, adding the hosts that do not exist yet."""
    settings = load_settings(
        **{
            k.removeprefix("NIXFLEET_").lower(): v
            for k, v in env.items()
            if not k.endswith("_FILE")
        },
        agent_token_hash_secret=Path(env["NIXFLEET_AGENT_TOKEN_HASH_SECRET_FILE"]).read_text(),
    )
    await asyncio.to_thread(upgrade, settings.db_url)
    db = Database(settings.db_url)
    fleet = Fleet(settings, db, LocalBus())
    tokens = []
    try:
        existing = {h["id"] for h in await host_store.list_all(db)}
        for i, (host_id, _) in enumerate(names):
            if host_id in existing:
                tokens.append(await fleet.rotate_token(host_id))
            else:
                meta = {
                    "location": _LOCATIONS[i % 6],
                    "theme_color": _COLOURS[i % 6],
                    "device_type": "server" if i % 2 == 0 else "laptop",
                }
                await fleet.add_host(host_id, meta)
                tokens.append(await fleet.rotate_token(host_id))
    finally:
        await db.close()
    return tokens


def _seed_system(host: DemoHost) -> None:
    """Give a simulated host a first generation, as a freshly installed machine has."""
    system = host.root / "system"
    if (system / "generation").exists():
        return
    digest = hashlib.sha256(host.host_id.encode()).hexdigest()[:32]
    kind = "darwin-system" if host.os_kind == "macos" else "nixos-system"
    path = f"/nix/store/{digest}-{kind}-{host.host_id}-25.05.20250101.0000000"
    for name, text in (("generation", "1"), ("current-system", path), ("booted-system", path)):
        (system / name).write_text(text + "\n")


def start_dashboard(
    fleet: DemoFleet, port: int, log_file: Path | None = None, log_level: str = "warning"
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `nixfleet serve` for the fleet; return the process and its bound port."""
    port_file = fleet.root / "dashboard.port"
    port_file.unlink(missing_ok=True)
    out = (log_file or fleet.root / "dashboard.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nixfleet",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--port-file",
            str(port_file),
            "--log-level",
            log_level,
        ],
        env={**os.environ, **fleet.env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text():
            return proc, int(port_file.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"demo: dashboard exited with {proc.returncode}; see {out.name}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("demo: dashboard did not start within 30 s")


def start_agent(
    fleet: DemoFleet,
    host: DemoHost,
    port: int,
    build_seconds: float,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the real agent for a simulated host, with the fake Nix tools first on PATH."""
    macos_tool = "home-manager" if host.host_id.startswith("ember") else "darwin-rebuild"
    env = {
        **os.environ,
        "PATH": f"{fleet.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "NIXFLEET_FAKE_STATE_DIR": str(host.root / "system"),
        "NIXFLEET_FAKE_DURATION": str(build_seconds),
        **(extra_env or {}),
    }
    log = (host.root / "agent.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nixfleet",
            "agent",
            "--url",
            f"http://127.0.0.1:{port}",
            "--host-id",
            host.host_id,
            "--token-file",
            str(host.token_file),
            "--repo-dir",
            str(host.root / "repo"),
            "--repo-url",
            fleet.repo_url,
            "--state-dir",
            str(host.root / "state"),
            "--system-dir",
            str(host.root / "system"),
            "--os",
            host.os_kind,
            "--macos-tool",
            macos_tool,
            "--systemd-run",
            "no",
            "--allow-insecure",
            # Loopback: a restarted demo dashboard should be found in seconds, not minutes.
            "--backoff-floor",
            "0.2",
            "--backoff-cap",
            "5",
            "--probe-interval",
            "5",
            "--log-level",
            "warning",
            *(extra_args or []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_demo(hosts: int, port: int, data_dir: Path, build_seconds: float) -> None:
    """Prepare, start everything, print the URL and password, stop everything on Ctrl-C."""
    fleet = prepare(data_dir, hosts)
    server, bound = start_dashboard(fleet, port)
    agents = [start_agent(fleet, h, bound, build_seconds) for h in fleet.hosts]
    print(f"NixFleet demo: http://127.0.0.1:{bound}/", flush=True)
    print(f"  user: admin   password (this run only): {fleet.password}", flush=True)
    print(f"  {len(agents)} simulated hosts; data in {fleet.root}. Ctrl-C stops.", flush=True)
    stop = {"now": False}

    def on_signal(_sig: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["now"] and server.poll() is None:
            time.sleep(0.5)
    finally:
        for proc in [*agents, server]:
            proc.terminate()
        for proc in [*agents, server]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
