"""`nixfleet demo`: a dashboard and simulated hosts running the real agent, on loopback.

The pieces are public so the test-suite starts its fleets the same way the demo does.
"""

from __future__ import annotations

import asyncio
import json
import os
import plistlib
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
from nixfleet.demo.configrepo import WORK_NAME, create_config_repo
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
_MACOS_VERSIONS = ["15.2", "14.7.2", "15.1.1"]
# The demo host whose next system cuts it off the network, and the demo's fleet-wide gate.
BREAKING_HOST = "fjord"
DEMO_GATE_S = 20
NIX_MISSING = (
    "demo: the demo builds its hosts' systems with Nix, which is not installed: "
    "apt-get install nix-bin (Debian), or see https://nixos.org/download"
)
_NIX = [
    "nix",
    "--extra-experimental-features",
    "nix-command flakes",
    "--option",
    "substituters",
    "",
]


class DemoError(RuntimeError):
    """The demo cannot start; the message says what to do, in one line."""


def require_nix() -> None:
    """Raise DemoError naming the install command when Nix is not on PATH."""
    if shutil.which("nix") is None or shutil.which("nix-env") is None:
        raise DemoError(NIX_MISSING)


@dataclass
class DemoHost:
    host_id: str
    os_kind: str
    root: Path

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def tool(self) -> str:
        """Return the host's deploy tool: one demo Mac uses home-manager, not nix-darwin."""
        if self.os_kind == "nixos":
            return "nixos-rebuild"
        return "home-manager" if self.host_id.startswith("ember") else "darwin-rebuild"

    @property
    def system_dir(self) -> Path:
        """What /run and /nix/var/nix/profiles are on a real host: links and the profile."""
        return self.root / "system"

    @property
    def profile(self) -> Path:
        name = "home-manager" if self.tool == "home-manager" else "system"
        return self.system_dir / "profiles" / name

    @property
    def flake_attr(self) -> str:
        return {
            "nixos-rebuild": f'nixosConfigurations."{self.host_id}".config.system.build.toplevel',
            "darwin-rebuild": f'darwinConfigurations."{self.host_id}".system',
            "home-manager": f'homeConfigurations."{self.host_id}".activationPackage',
        }[self.tool]


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
    breaking: tuple[str, ...] = (),
) -> DemoFleet:
    """Return a fleet on disk under root, with a fresh admin password and agent tokens.

    failing: hosts whose build fails; breaking: hosts whose next system cuts them off the
    network (configrepo.create_config_repo), for a health-gated switch to roll back.
    """
    require_nix()
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
        create_config_repo(
            root / "config",
            names,
            failing=[f for f in failing if f in dict(names)],
            breaking=[b for b in breaking if b in dict(names)],
        )
    bindir = root / "bin"
    if not bindir.exists():
        shutil.copytree(FAKEBIN, bindir)
        for tool in ("nixos-rebuild", "darwin-rebuild", "home-manager", "systemctl"):
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
    for i, ((host_id, os_kind), token) in enumerate(zip(names, tokens, strict=True)):
        host = DemoHost(host_id, os_kind, root / "hosts" / host_id)
        (host.system_dir / "profiles").mkdir(parents=True, exist_ok=True)
        host.token_file.write_text(token)
        host.token_file.chmod(0o600)
        if os_kind == "macos":
            version = {"ProductName": "macOS", "ProductVersion": _MACOS_VERSIONS[i % 3]}
            (host.root / "SystemVersion.plist").write_bytes(plistlib.dumps(version))
        fleet.hosts.append(host)
    _install_systems(root, [h for h in fleet.hosts if not h.profile.is_symlink()])
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


def _install_systems(root: Path, hosts: list[DemoHost]) -> None:
    """Give each new simulated host the system it was installed with: generation 1.

    Built with real Nix from a plain copy of the initial configuration (a `path:` flake, so
    without a configuration revision, and before any host was broken on purpose): like a
    machine installed by hand, the fleet has never deployed it.
    """
    if not hosts:
        return
    source = root / "installer-config"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(
        root / "config" / WORK_NAME,
        source,
        ignore=shutil.ignore_patterns(".git", "FAIL_BUILD", "BREAK_NETWORK"),
    )
    # One build per host: nix reports several installables' outputs in no fixed order.
    built = [_build(f"path:{source}#{h.flake_attr}") for h in hosts]
    for host, system in zip(hosts, built, strict=True):
        subprocess.run(["nix-env", "-p", str(host.profile), "--set", system], check=True)
        names: tuple[str, ...] = ("current-system",)
        if host.tool == "home-manager":
            names = ("current-home",)
        if host.os_kind == "nixos":
            names += ("booted-system",)
        for name in names:
            _relink(host.system_dir / name, system)
    shutil.rmtree(source, ignore_errors=True)


def _build(ref: str) -> str:
    """Return the store path nix built for the flake output ref."""
    proc = subprocess.run(
        [*_NIX, "build", "--no-link", "--json", ref],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise DemoError(f"demo: building {ref} failed: {proc.stderr.strip()[-400:]}")
    return str(json.loads(proc.stdout)[0]["outputs"]["out"])


def _relink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def reboot(host: DemoHost) -> str:
    """Return the system a demo "reboot" brought up: the profile's current generation.

    As a real reboot does, it boots the default generation, so both booted-system and
    current-system point at it afterwards.
    """
    system = str(host.profile.resolve(strict=True))
    for name in ("current-system", "booted-system"):
        _relink(host.system_dir / name, system)
    return system


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


def start_network(
    fleet: DemoFleet, hosts: list[DemoHost], dashboard_port: int
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """Start the hosts' network stand-in (demo.network); return it and each host's port.

    An agent given its host's port reaches the dashboard only while the host's running
    system does not drop outgoing connections.
    """
    port_file = fleet.root / "network.ports"
    port_file.unlink(missing_ok=True)
    out = (fleet.root / "network.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nixfleet.demo.network",
            str(port_file),
            str(dashboard_port),
            *(str(h.system_dir) for h in hosts),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"demo: the network stand-in did not start; see {out.name}")
        time.sleep(0.05)
    ports = json.loads(port_file.read_text())
    return proc, {h.host_id: int(ports[str(h.system_dir)]) for h in hosts}


def start_agent(
    fleet: DemoFleet,
    host: DemoHost,
    port: int,
    build_seconds: float,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the real agent for a simulated host, with the stand-in Nix tools first on PATH.

    build_seconds paces the tools' output (about 15 lines a command), so the demo's
    builds can be watched; Nix itself builds these tiny systems in well under a second.
    """
    macos_tool = "darwin-rebuild" if host.tool == "nixos-rebuild" else host.tool
    env = {
        **os.environ,
        "PATH": f"{fleet.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "NIXFLEET_DEMO_SYSTEM_DIR": str(host.system_dir),
        "NIXFLEET_DEMO_PACE": f"{max(build_seconds, 0) / 15:.3f}",
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
            str(host.system_dir),
            "--system-profile",
            str(host.profile),
            "--macos-version-file",
            str(host.root / "SystemVersion.plist"),
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
    # Every switch is health-gated: kept only when the agent is back within 20 s. fjord's
    # next system breaks its network, so switching it shows the host rolling back alone.
    gate = {"NIXFLEET_HEALTH_GATE": json.dumps({"deadline_s": DEMO_GATE_S})}
    fleet = prepare(data_dir, hosts, extra_env=gate, breaking=(BREAKING_HOST,))
    server, bound = start_dashboard(fleet, port)
    network, ports = start_network(fleet, fleet.hosts, bound)
    agents = [start_agent(fleet, h, ports[h.host_id], build_seconds) for h in fleet.hosts]
    print(f"NixFleet demo: http://127.0.0.1:{bound}/", flush=True)
    print(f"  user: admin   password (this run only): {fleet.password}", flush=True)
    print(f"  {len(agents)} simulated hosts; data in {fleet.root}. Ctrl-C stops.", flush=True)
    if BREAKING_HOST in ports:
        print(
            f"  Switch {BREAKING_HOST}: its new config breaks its network, and it rolls back "
            f"by itself within {DEMO_GATE_S} s (docs/deploying.md).",
            flush=True,
        )
    agents.append(network)
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
