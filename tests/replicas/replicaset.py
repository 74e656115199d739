"""Two dashboard replicas on one PostgreSQL database, with real agents, real browsers'
event streams and, where a test asks for one, a real nginx balancing the agents."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Api, RunningFleet, wait_for
from nixfleet.demo.run import start_agent, start_dashboard

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
LEASE_S = 3.0
METRICS_TOKEN = "replica-metrics-token-0123456789abcdef"


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        res = httpx.get(f"{self.base}/metrics", headers=auth, timeout=10)
        assert res.status_code == 200, res.text
        return res.text

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class Stream:
    """A browser's /api/events on one replica, read in a thread: every frame, in order."""

    def __init__(self, api: Api) -> None:
        self.frames: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(api,), daemon=True)
        self._thread.start()
        wait_for(lambda: self.frames, 15, "the event stream's snapshot")

    def _read(self, api: Api) -> None:
        try:
            self._follow(api)
        except httpx.TransportError:
            pass  # the replica died or the test closed the stream: it ends here

    def _follow(self, api: Api) -> None:
        base = str(api.http.base_url)
        with (
            httpx.Client(base_url=base, cookies=api.http.cookies, timeout=60) as client,
            client.stream("GET", "/api/events") as res,
        ):
            current: dict[str, Any] = {}
            for line in res.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event: "):
                    current["event"] = line[7:]
                elif line.startswith("data: "):
                    current["data"] = json.loads(line[6:])
                elif line == "" and "event" in current:
                    self.frames.append(current)
                    current = {}

    def output(self, command_id: str) -> dict[int, str]:
        """Return {seq: text} of the command's lines this browser was sent live."""
        lines: dict[int, str] = {}
        for f in self.frames:
            if f["event"] == "output" and f["data"]["command_id"] == command_id:
                lines.update({ln["seq"]: ln["text"] for ln in f["data"]["lines"]})
        return lines

    def close(self) -> None:
        self._stop.set()


@dataclass
class Pair:
    """Replicas a and b of one fleet; agents start against either (or a balancer)."""

    rf: RunningFleet
    a: Replica
    b: Replica
    streams: list[Stream] = field(default_factory=list)

    def replica(self, name: str) -> Replica:
        return self.a if name == "a" else self.b

    def login(self, name: str) -> Api:
        return Api(self.replica(name).base, self.rf.fleet.password)

    def acting_on(self, api: Api, name: str) -> Api:
        """Return api's session (cookie and CSRF token) used against the other replica."""
        other = Api.__new__(Api)
        other.http = httpx.Client(base_url=self.replica(name).base, timeout=10)
        other.http.cookies = api.http.cookies
        other.csrf = api.csrf
        return other

    def stream(self, api: Api) -> Stream:
        self.streams.append(Stream(api))
        return self.streams[-1]

    def start_agent(self, host_id: str, port: int) -> None:
        rf = self.rf
        rf.agents[host_id] = start_agent(
            rf.fleet, rf.host(host_id), port, rf.build_seconds, {"NIXFLEET_TEST_MARK": rf.mark}
        )


@pytest.fixture
def pair(make_fleet, pg_cluster) -> Iterator[Callable[..., Pair]]:
    """Return a factory: pair(hosts=2, build_seconds=1) starts replicas a and b."""
    made: list[Pair] = []

    def factory(
        hosts: int = 2, build_seconds: float = 1.0, env: dict[str, str] | None = None
    ) -> Pair:
        url = pg_cluster.url(pg_cluster.create_database())
        env = {
            "NIXFLEET_DATABASE_URL": url,
            "NIXFLEET_REPLICA_LEASE_S": str(LEASE_S),
            "NIXFLEET_SSE_KEEPALIVE_S": "1",
            "NIXFLEET_HEARTBEAT_S": "2",
            "NIXFLEET_METRICS_TOKEN": METRICS_TOKEN,
            **(env or {}),
        }
        rf = make_fleet(hosts=hosts, build_seconds=build_seconds, agents=False, env=env)
        assert rf.server is not None
        a = Replica("a", rf.server, rf.port, rf.fleet.root / "dashboard.log")
        log_b = rf.fleet.root / "dashboard-b.log"
        proc_b, port_b = start_dashboard(rf.fleet, 0, log_file=log_b)
        made.append(Pair(rf, a, Replica("b", proc_b, port_b, log_b)))
        return made[-1]

    yield factory
    for p in made:
        for s in p.streams:
            s.close()
        if p.b.proc.poll() is None:
            p.b.proc.terminate()
            # Generous: under a loaded CI machine a graceful shutdown (streams and agent
            # sockets closing) took over 10 s once; a real hang still fails here.
            p.b.proc.wait(30)
        text = p.b.log.read_text(errors="replace") if p.b.log.exists() else ""
        assert "unhandled error" not in text, f"replica b answered 500: see {p.b.log}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def balancer(tmp_path) -> Iterator[Callable[[int, int], int]]:
    """Return a factory: balancer(first, backup) starts nginx and returns its port.

    Agents go to `first` while it answers and to `backup` once it refuses connections,
    which makes "which replica holds the agent" deterministic for the tests.
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(first: int, backup: int) -> int:
        conf_dir = tmp_path / f"nginx{len(procs)}"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (conf_dir / kind).mkdir(parents=True)
        port = _free_port()
        conf = conf_dir / "nginx.conf"
        conf.write_text(_nginx_conf(conf_dir, port, first, backup))
        procs.append(
            subprocess.Popen(
                [NGINX, "-p", str(conf_dir), "-c", str(conf), "-e", str(conf_dir / "error.log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 20, "nginx to answer")
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _nginx_conf(tmp: Path, listen: int, first: int, backup: int) -> str:
    temp = "\n".join(
        f"  {kind}_temp_path {tmp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
{temp}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream nixfleet {{
    server 127.0.0.1:{first} max_fails=1 fail_timeout=30s;
    server 127.0.0.1:{backup} backup;
  }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://nixfleet;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
      proxy_connect_timeout 2s;
    }}
  }}
}}
"""
