"""Real fleets for tests: a dashboard process on an ephemeral loopback port, real agent
processes, the fake Nix tools, and a real git config repo — the same parts the demo uses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from argon2 import PasswordHasher

import pgserver
from nixfleet.demo.run import DemoFleet, DemoHost, prepare, start_agent, start_dashboard

# The admin's argon2 hash for test fleets: argon2's defaults (64 MiB, 3 passes) cost ~0.2 s
# of CPU per login, paid again by each of the suite's many logins. The cost is read from the
# hash, so it is the operator's choice; tests/security/test_password_timing.py covers the
# defaults and users added through the product (CLI, /api/users) still get them.
_QUICK_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

# Fixtures of the multi-replica tests (two dashboards on one PostgreSQL, nginx in front).
pytest_plugins = ["replicas.replicaset"]


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Return predicate()'s first truthy value, polling until timeout (then fail the test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_cli(
    args: list[str],
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Return the finished `nixfleet ARGS`, run with env and no NIXFLEET_* of our own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "nixfleet", *args],
        env={**clean, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def wait_for_async(
    predicate: Callable[[], Any], timeout: float = 10, what: str = "condition"
) -> Any:
    """Return predicate()'s first truthy value, yielding to the event loop until timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def pids_with_env(name: str, value: str) -> set[int]:
    """Return the pids of processes whose environment has name=value (children inherit it)."""
    found = set()
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            environ = (proc_dir / "environ").read_bytes()
        except OSError:
            continue
        if f"{name}={value}".encode() in environ.split(b"\0"):
            found.add(int(proc_dir.name))
    return found


class Api:
    """A logged-in browser session speaking the JSON API (cookie + CSRF header)."""

    def __init__(self, base: str, password: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=10, follow_redirects=False)
        res = self.http.post("/login", data={"username": "admin", "password": password})
        assert res.status_code == 303, res.text
        page = self.http.get("/").text
        self.csrf = page.split('name="csrf-token" content="')[1].split('"')[0]

    def post(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}
        return self.http.post(path, json=json, headers=headers, **kw)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def command(self, host_id: str, kind: str) -> str:
        res = self.post(f"/api/hosts/{host_id}/command", {"command": kind})
        assert res.status_code == 202, res.text
        return str(res.json()["command_id"])

    def wait_state(self, command_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            cmd = self.get(f"/api/commands/{command_id}").json()
            return cmd if cmd["state"] in states else None

        return dict(wait_for(done, timeout, f"command {command_id} to reach {states}"))

    def host(self, host_id: str) -> dict[str, Any]:
        hosts = self.get("/api/hosts").json()["hosts"]
        return next(h for h in hosts if h["id"] == host_id)

    def wait_online(self, host_ids: list[str], timeout: float = 30) -> None:
        def all_online() -> bool:
            hosts = {h["id"]: h for h in self.get("/api/hosts").json()["hosts"]}
            return all(hosts[h]["online"] for h in host_ids)

        wait_for(all_online, timeout, f"{host_ids} online")


@dataclass
class RunningFleet:
    fleet: DemoFleet
    mark: str
    build_seconds: float
    server: subprocess.Popen[bytes] | None = None
    port: int = 0
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # A test that provokes a 500 on purpose says so; every other one fails on a 500.
    expect_internal_errors: bool = False

    def __post_init__(self) -> None:
        self.fleet.env["NIXFLEET_ADMIN_PASSWORD_HASH"] = _QUICK_HASHER.hash(self.fleet.password)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def host(self, host_id: str) -> DemoHost:
        return next(h for h in self.fleet.hosts if h.host_id == host_id)

    def start_dashboard(self, log_level: str = "warning") -> None:
        self.server, self.port = start_dashboard(self.fleet, self.port, log_level=log_level)

    def kill_dashboard(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()

    def start_agent(
        self, host_id: str, env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> None:
        self.agents[host_id] = start_agent(
            self.fleet,
            self.host(host_id),
            self.port,
            self.build_seconds,
            {"NIXFLEET_TEST_MARK": self.mark, **(env or {})},
            args,
        )

    def kill_agent(self, host_id: str) -> None:
        proc = self.agents.pop(host_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def api(self) -> Api:
        return Api(self.base, self.fleet.password)

    def marked_pids(self) -> set[int]:
        """Return pids of every process started for this fleet (agents, runners, builds)."""
        return pids_with_env("NIXFLEET_TEST_MARK", self.mark)

    def stop(self) -> None:
        for proc in [*self.agents.values(), *([self.server] if self.server else [])]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.agents.values(), *([self.server] if self.server else [])]:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for pid in self.marked_pids():  # detached runners and builds outlive the agents
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- database engines: SQLite, and a throwaway PostgreSQL cluster for the session ----------
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgserver.Cluster]:
    """Return a running PostgreSQL cluster (skipped locally when none is installed; CI fails)."""
    bindir = pgserver.find_bindir()
    if bindir is None:
        reason = "PostgreSQL is not installed (scripts/bootstrap --test installs postgresql)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = pgserver.create(bindir)
    yield cluster
    pgserver.destroy(cluster)


@pytest.fixture
async def pg_db(pg_cluster: pgserver.Cluster) -> AsyncIterator[Any]:
    """Return a Database on a fresh, migrated PostgreSQL database of the session's cluster."""
    from nixfleet.storage.db import Database
    from nixfleet.storage.migrate import upgrade

    name = pg_cluster.create_database()
    url = pg_cluster.url(name)
    await asyncio.to_thread(upgrade, url)
    database = Database(url)
    yield database
    await database.close()
    pg_cluster.drop_database(name)


@dataclass
class Backend:
    """The database a test runs on: its engine name and a fresh, empty database's URL."""

    name: str
    url: str

    @property
    def env(self) -> dict[str, str]:
        # A fleet on SQLite keeps the default (a file in its data dir), as users have it.
        return {} if self.name == "sqlite" else {"NIXFLEET_DATABASE_URL": self.url}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Run the test on SQLite and on PostgreSQL, each on a fresh database.

    A test module opts in by taking `backend` (or by `usefixtures("backend")`); `make_fleet`
    then points its dashboard at that database.
    """
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'backend.db'}")
        return
    cluster: pgserver.Cluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    yield Backend("postgresql", cluster.url(name))
    cluster.drop_database(name)


class Fleets:
    """Start fleets under one directory and, when done, stop them and check their logs."""

    def __init__(self, root: Path, engine_env: dict[str, str]) -> None:
        self.root = root
        self.engine_env = engine_env
        self.running: list[RunningFleet] = []

    def make(
        self,
        hosts: int = 3,
        build_seconds: float = 1.0,
        agents: bool = True,
        env: dict[str, str] | None = None,
        failing: tuple[str, ...] = ("dune",),
    ) -> RunningFleet:
        env = {**self.engine_env, **(env or {})}
        fleet = prepare(
            self.root / f"fleet{len(self.running)}", hosts, failing=failing, extra_env=env
        )
        rf = RunningFleet(fleet, uuid.uuid4().hex, build_seconds)
        self.running.append(rf)
        rf.start_dashboard()
        if agents:
            for h in fleet.hosts:
                rf.start_agent(h.host_id)
            rf.api().wait_online([h.host_id for h in fleet.hosts])
        return rf

    def close(self) -> None:
        for rf in self.running:
            rf.stop()
        for rf in self.running:
            log = rf.fleet.root / "dashboard.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            if not rf.expect_internal_errors:
                assert "unhandled error" not in text, f"the dashboard answered 500: see {log}"


@pytest.fixture
def make_fleet(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RunningFleet]]:
    """Return a factory: make_fleet(hosts=3, build_seconds=1, agents=True, env={...}).

    Under the `backend` fixture the dashboard uses that fixture's database.
    """
    engine_env = request.getfixturevalue("backend").env if "backend" in request.fixturenames else {}
    fleets = Fleets(tmp_path, engine_env)
    yield fleets.make
    fleets.close()


@pytest.fixture(scope="module")
def make_module_fleet(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RunningFleet]]:
    """Return make_fleet's factory for fleets that serve every test of a module (on SQLite).

    A fleet costs about 3 s of CPU to prepare and start (Nix builds, a dashboard's imports,
    agents), which most of a module's tests spend again only to read or to be refused. Only
    for tests that leave nothing a later test of the module could see, or that each use a
    thing (host, user, session) of their own.
    """
    fleets = Fleets(tmp_path_factory.mktemp("fleets"), {})
    yield fleets.make
    fleets.close()


# --- agents against arbitrary servers (the transport tests in tests/agent) ---------------
@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    """Return the CA the agent trusts and the PEM file it is given with --ca-file."""
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Return a factory: agent(url, *flags) starts `nixfleet agent` with a fresh state."""
    started: list[AgentProcess] = []

    def start(url: str, *flags: str) -> AgentProcess:
        root = tmp_path / f"agent{len(started)}"
        (root / "system").mkdir(parents=True)
        token = root / "token"
        token.write_text("nfa_transport-test-token")
        token.chmod(0o600)
        log_file = root / "agent.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nixfleet",
                "agent",
                "--url",
                url,
                "--host-id",
                "atlas",
                "--token-file",
                str(token),
                "--repo-dir",
                str(root / "repo"),
                "--state-dir",
                str(root / "state"),
                "--system-dir",
                str(root / "system"),
                "--systemd-run",
                "no",
                "--log-level",
                "info",
                *flags,
            ],
            stdout=log_file.open("ab"),
            stderr=subprocess.STDOUT,
        )
        started.append(AgentProcess(proc, log_file))
        return started[-1]

    yield start
    for a in started:
        if a.proc.poll() is None:
            a.proc.send_signal(signal.SIGTERM)
    for a in started:
        try:
            a.proc.wait(5)
        except subprocess.TimeoutExpired:
            a.proc.kill()
