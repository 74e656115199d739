"""A real nginx (Debian's package) in front of the dashboard, configured as docs/deployment.md
says: the client address survives the hop, the event stream is not buffered, and agents
connect through it over WebSocket."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from conftest import Api, wait_for
from nixfleet.demo.run import start_agent

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (scripts/bootstrap --test)"
)

# The part of the config that docs/deployment.md shows; the test adds only the paths.
PROXY_HEADERS = """
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Request-ID $request_id;
      proxy_bind 127.0.0.1;
"""


def _nginx_conf(tmp: Path, listen: int, upstream: int) -> str:
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
  access_log {tmp / "access.log"};
{temp}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream nixfleet {{ server 127.0.0.1:{upstream}; }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://nixfleet;{PROXY_HEADERS}
    }}
    location = /api/events {{
      proxy_pass http://nixfleet;{PROXY_HEADERS}
      proxy_buffering off;
      proxy_cache off;
      proxy_read_timeout 1h;
    }}
    location = /api/agent/ws {{
      proxy_pass http://nixfleet;{PROXY_HEADERS}
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
    }}
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def behind_nginx(make_fleet, tmp_path, request):
    """Return (fleet, nginx URL, nginx port); an indirect parameter sets the API rate."""
    rf = make_fleet(
        hosts=1,
        agents=False,
        env={
            "NIXFLEET_TRUSTED_PROXIES": "127.0.0.1",
            "NIXFLEET_RATE_LIMIT_API": getattr(request, "param", "100/second"),
        },
    )
    conf_dir = tmp_path / "nginx"
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (conf_dir / kind).mkdir(parents=True)
    port = _free_port()
    conf = conf_dir / "nginx.conf"
    conf.write_text(_nginx_conf(conf_dir, port, rf.port))
    proc = subprocess.Popen(
        [NGINX, "-p", str(conf_dir), "-c", str(conf), "-e", str(conf_dir / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError((conf_dir / "error.log").read_text())
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 20, "nginx to answer")
    yield rf, f"http://127.0.0.1:{port}", port
    proc.terminate()
    proc.wait(10)


def _client(base: str, source: str) -> httpx.Client:
    """Return a client connecting from another loopback address (a different browser)."""
    return httpx.Client(
        base_url=base, transport=httpx.HTTPTransport(local_address=source), timeout=10
    )


def _access(rf, needle: str) -> list[str]:
    log = (rf.fleet.root / "dashboard.log").read_text().splitlines()
    return [ln for ln in log if "nixfleet.access" in ln and needle in ln]


@pytest.mark.parametrize("behind_nginx", ["20/year"], indirect=True)
def test_the_dashboard_sees_each_client_through_nginx_and_limits_them_apart(behind_nginx):
    rf, base, _ = behind_nginx
    api = Api(base, rf.fleet.password)  # logged in through nginx, from 127.0.0.1
    one, two = _client(base, "127.0.0.2"), _client(base, "127.0.0.3")
    for client in (one, two):
        client.cookies = api.http.cookies
    statuses = []
    for i in range(25):
        # Each request forges a new left-most X-Forwarded-For; nginx appends the real peer.
        res = one.get("/api/hosts", headers={"X-Forwarded-For": f"203.0.113.{i}"})
        statuses.append(res.status_code)
    assert 429 in statuses
    assert res.status_code == 429
    assert int(res.headers["Retry-After"]) >= 1
    assert two.get("/api/hosts").status_code == 200  # the other browser has its own budget
    # nginx's $request_id reaches the dashboard's log and comes back to the browser.
    request_id = res.headers["X-Request-ID"]
    assert len(request_id) == 32
    line = wait_for(lambda: _access(rf, request_id))[0]
    assert "address=127.0.0.2 " in line and "status=429" in line
    assert not _access(rf, "203.0.113.")


def test_events_stream_through_nginx_without_buffering(behind_nginx):
    rf, base, _ = behind_nginx
    api = Api(base, rf.fleet.password)
    events: list[str] = []
    stop = threading.Event()

    def read() -> None:
        with (
            httpx.Client(base_url=base, cookies=api.http.cookies, timeout=30) as client,
            client.stream("GET", "/api/events") as res,
        ):
            for line in res.iter_lines():
                if line.startswith("data: ") and "through-nginx" in line:
                    events.append(line)
                elif line.startswith("event: "):
                    events.append(line[7:])
                if stop.is_set():
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(lambda: "snapshot" in events, 15, "the snapshot through nginx")
    assert api.post("/api/hosts", {"host_id": "through-nginx"}).status_code == 201
    # One small event arrives at once: nginx does not hold it back in a buffer.
    wait_for(lambda: any("through-nginx" in e for e in events), 10, "the event through nginx")
    stop.set()
    api.post("/api/hosts", {"host_id": "wake-reader"})
    reader.join(10)


def test_an_agent_connects_through_nginx_over_websocket(behind_nginx):
    rf, base, port = behind_nginx
    host = rf.fleet.hosts[0]
    rf.agents[host.host_id] = start_agent(rf.fleet, host, port, rf.build_seconds)
    api = Api(base, rf.fleet.password)
    api.wait_online([host.host_id])
    cid = api.command(host.host_id, "switch")
    assert api.wait_state(cid, {"succeeded", "failed"})["state"] == "succeeded"
    rf.kill_agent(host.host_id)  # a WebSocket's access line is written when it ends
    line = wait_for(lambda: _access(rf, "path=/api/agent/ws status=101"), 10)[0]
    assert f"host={host.host_id}" in line and "address=127.0.0.1 " in line
