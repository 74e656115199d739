"""Every rate-limit refusal is a security event naming the route (the dashboard served by
uvicorn in this process, so the test can listen on the security log the way the stored
event log and metrics do)."""

from __future__ import annotations

import threading

import httpx
import uvicorn

from conftest import wait_for
from nixfleet.config import load_settings
from nixfleet.core.secevents import EventKind
from nixfleet.dashboard.app import create_app
from nixfleet.storage.migrate import upgrade


def test_each_refusal_emits_a_rate_limited_event_with_the_route(tmp_path):
    # Yearly windows: the sliding-window counter weighs the previous window down as the new
    # one starts, so a minute window would let the next request through at a minute boundary.
    settings = load_settings(
        demo=True, data_dir=tmp_path, rate_limit_api="2/year", rate_limit_login="1/year"
    )
    upgrade(settings.db_url)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        seen = []
        app.state.ctx.security.subscribe(seen.append)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            statuses = [client.get("/api/hosts").status_code for _ in range(3)]
            assert statuses == [401, 401, 429]  # counted before authentication
            client.post("/login", data={"username": "admin", "password": "x"})
            res = client.post("/login", data={"username": "admin", "password": "x"})
            assert res.status_code == 429
    finally:
        server.should_exit = True
        thread.join(10)
    limited = [e for e in seen if e.kind == EventKind.RATE_LIMITED]
    assert [(e.detail, e.address) for e in limited] == [
        ("api", "127.0.0.1"),
        ("login", "127.0.0.1"),
    ]
