"""A full disk under the database: /health says so, writes are refused cleanly (503, nothing
half-written, no 500), and everything works again once space returns. The data directory
is a real 16 MiB tmpfs, filled up by a file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import wait_for


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    """Write zeros to path until the file system has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def test_a_full_disk_is_reported_refused_cleanly_and_recovered_from(make_fleet, small_disk):
    fleet = make_fleet(
        hosts=1,
        agents=False,
        env={"NIXFLEET_DATA_DIR": str(small_disk), "NIXFLEET_AUDIT_WRITE_TIMEOUT_S": "2"},
    )
    api = fleet.api()
    assert httpx.get(f"{fleet.base}/health").json() == {"status": "ok", "database": "ok"}
    filler = small_disk / "filler"
    _fill(filler)
    health = httpx.get(f"{fleet.base}/health")
    assert health.status_code == 503
    assert health.json()["database"] == "not writable"
    statuses = []
    for i in range(60):
        res = api.post("/api/hosts", {"host_id": f"full-{i:02d}", "location": "x" * 200})
        statuses.append(res.status_code)
        if res.status_code == 503:
            assert res.json()["error"] in ("storage_full", "unavailable"), res.text
            assert "retry-after" in res.headers
            break
    assert 503 in statuses and 500 not in statuses, statuses
    refused = f"full-{len(statuses) - 1:02d}"
    filler.unlink()
    wait_for(lambda: httpx.get(f"{fleet.base}/health").status_code == 200, 15, "recovery")
    hosts = {h["id"] for h in api.get("/api/hosts").json()["hosts"]}
    assert refused not in hosts  # the refused add left nothing behind
    assert api.post("/api/hosts", {"host_id": "after-full"}).status_code == 201
    assert os.statvfs(small_disk).f_bavail > 0
