"""Every PostgreSQL connection of a replica busy: requests wait out the pool's timeout and are
answered 503 with Retry-After, also where the wait happens in middleware before any route
(the shared rate-limit counters); nothing is half-done, and the replica recovers by itself."""

from __future__ import annotations

import asyncio
import threading

import httpx
import psycopg
import pytest

import pgserver
from conftest import wait_for
from rawagent import handshake_status


@pytest.fixture
def one_connection(make_fleet, backend, pg_cluster):
    """A dashboard on PostgreSQL allowed one pooled connection, waiting 1 s for it."""
    env = {
        "NIXFLEET_DB_POOL_SIZE": "1",
        "NIXFLEET_DB_POOL_OVERFLOW": "0",
        "NIXFLEET_DB_POOL_TIMEOUT_S": "1",
    }
    return make_fleet(hosts=1, agents=False, env=env)


def _lock_hosts(pg_cluster, backend) -> psycopg.Connection[tuple[object, ...]]:
    """Lock the hosts table from outside the dashboard; every read of it waits."""
    name = backend.url.rsplit("/", 1)[1]
    conn = psycopg.connect(
        host="127.0.0.1",
        port=pg_cluster.port,
        user=pgserver.USER,
        password=pg_cluster.password,
        dbname=name,
    )
    conn.execute("LOCK TABLE hosts IN ACCESS EXCLUSIVE MODE")
    return conn


def _waiting_on_lock(pg_cluster, backend) -> bool:
    name = backend.url.rsplit("/", 1)[1]
    with pg_cluster.admin() as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (name,),
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_requests_beyond_the_pool_get_503_and_nothing_is_half_done(
    one_connection, backend, pg_cluster
):
    fleet = one_connection
    api, holder_api = fleet.api(), fleet.api()
    lock = _lock_hosts(pg_cluster, backend)
    held: dict[str, httpx.Response] = {}
    # This request takes the one connection and waits on the lock with it.
    reader = threading.Thread(
        target=lambda: held.setdefault("hosts", holder_api.get("/api/hosts")), daemon=True
    )
    try:
        reader.start()
        wait_for(lambda: _waiting_on_lock(pg_cluster, backend), 10, "the held read on the lock")
        add = api.post("/api/hosts", {"host_id": "web-07"})
        assert add.status_code == 503, add.text
        assert add.json()["error"] == "database_busy"
        assert "try again" in add.json()["detail"]
        assert int(add.headers["retry-after"]) >= 1
        page = api.get("/")
        assert page.status_code == 503, page.text
        # A handshake refused without touching the database, whose refusal the rate limit
        # counts in it: still refused, not a traceback.
        assert asyncio.run(handshake_status(fleet.base, "atlas")) == 401
    finally:
        lock.rollback()
        lock.close()
    reader.join(15)
    assert held["hosts"].status_code == 200
    hosts = {h["id"] for h in api.get("/api/hosts").json()["hosts"]}
    assert "web-07" not in hosts  # the refused add left no row
    assert api.post("/api/hosts", {"host_id": "web-07"}).status_code == 201
    entries = api.get("/api/audit?limit=1000").json()["entries"]
    assert len([e for e in entries if e["host"] == "web-07"]) == 1  # the add that happened
    text = (fleet.fleet.root / "dashboard.log").read_text()
    assert "answered 503" in text and "no connection came free" in text
    assert "Traceback" not in text


def test_pool_settings_are_bounded(tmp_path):
    # A pool of 0 or a timeout of a day would fail at the first request, not at start-up.
    from pydantic import ValidationError

    from nixfleet.config.settings import Settings

    for key, value in (
        ("db_pool_size", 0),
        ("db_pool_overflow", -1),
        ("db_pool_timeout_s", 0),
        ("agent_ping_s", 0.5),
        ("agent_ping_s", 301),
    ):
        with pytest.raises(ValidationError, match=key):
            Settings(demo=True, data_dir=tmp_path, **{key: value})
    assert Settings(demo=True, data_dir=tmp_path, db_pool_size=3).db_pool_size == 3


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_postgresql_restart_is_answered_503_until_it_is_back(make_fleet, backend, pg_cluster):
    fleet = make_fleet(hosts=1, agents=False)
    api = fleet.api()
    pg_cluster.stop()
    try:
        down = [api.get("/api/hosts"), api.post("/api/hosts", {"host_id": "web-08"})]
        # Agents are told to come back (503), or refused as before without a token.
        token = fleet.host("atlas").token_file.read_text().strip()
        handshakes = [
            asyncio.run(handshake_status(fleet.base, "atlas", token)),
            asyncio.run(handshake_status(fleet.base, "atlas")),
        ]
    finally:
        pg_cluster.start()
    assert handshakes == [503, 401]
    for res in down:
        assert res.status_code == 503, res.text
        assert "try again" in res.json()["detail"]
        assert int(res.headers["retry-after"]) >= 1
    wait_for(lambda: api.get("/api/hosts").status_code == 200, 15, "the dashboard back")
    assert "web-08" not in {h["id"] for h in api.get("/api/hosts").json()["hosts"]}
    assert api.post("/api/hosts", {"host_id": "web-08"}).status_code == 201
    text = (fleet.fleet.root / "dashboard.log").read_text()
    assert "Traceback" not in text
