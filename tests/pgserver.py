"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, `initdb` into a
temporary directory, `pg_ctl` on a free loopback port, stopped by the test session.

PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres` user
that Debian's package creates. A password (scram) guards it even on loopback.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

USER = "nixfleet"


def find_bindir() -> Path | None:
    """Return the directory holding initdb/pg_ctl/postgres, or None when none is installed."""
    on_path = shutil.which("initdb")
    if on_path and Path(on_path).resolve().with_name("postgres").exists():
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int
    password: str
    run_as: str | None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """Return an autocommit connection to the maintenance database."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=self.password,
            dbname="postgres",
            autocommit=True,
        )

    def create_database(self) -> str:
        """Return the name of a new, empty database."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "30",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            f"-p {self.port} -k {self.root}",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data), check=False)


def create(bindir: Path) -> Cluster:
    """Return a running cluster in a new temporary directory (initdb, config, start)."""
    run_as = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="nixfleet-pg-"))
    password = secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    pwfile.chmod(0o600)
    cluster = Cluster(bindir, root, _free_port(), password, run_as)
    cluster._run(
        "initdb",
        "-D",
        str(cluster.data),
        "-U",
        USER,
        "--pwfile",
        str(pwfile),
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
    )
    pwfile.unlink()
    # Throwaway data: durability costs time and buys nothing here.
    settings = [
        "listen_addresses = '127.0.0.1'",
        "max_connections = 300",
        "fsync = off",
        "synchronous_commit = off",
        "full_page_writes = off",
    ]
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write("\n".join(settings) + "\n")
    cluster.start()
    _watch(cluster)
    return cluster


def _watch(cluster: Cluster) -> None:
    """Stop and delete the cluster once this test process is gone, however it ended.

    A session killed by a timeout or SIGKILL never runs its teardown; without this its
    server would keep running (and its port and memory) until the machine stops.
    """
    stop = [str(cluster.bindir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(cluster.data)]
    if cluster.run_as:
        stop = ["runuser", "-u", cluster.run_as, "--", *stop]
    script = (
        f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
        f"{shlex.join(stop)} >/dev/null 2>&1; rm -rf {shlex.quote(str(cluster.root))}"
    )
    subprocess.Popen(
        ["sh", "-c", script],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def destroy(cluster: Cluster) -> None:
    cluster.stop("immediate")
    shutil.rmtree(cluster.root, ignore_errors=True)
