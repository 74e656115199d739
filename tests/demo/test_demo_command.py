"""`nixfleet demo` starts a usable fleet with one command and stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid

import httpx

from conftest import Api, pids_with_env, wait_for


def _start_demo(tmp_path, *args, env=None):
    """Return the demo process, its URL and its one-time password, as printed."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nixfleet",
            "demo",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "demo"),
            *args,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines = [proc.stdout.readline() for _ in range(3)]
    url = re.search(r"http://127\.0\.0\.1:\d+", lines[0]).group(0)
    password = re.search(r"password \(this run only\): (\S+)", lines[1]).group(1)
    return proc, url, password


def test_the_demo_prints_url_and_password_runs_hosts_and_stops_on_ctrl_c(tmp_path):
    mark = uuid.uuid4().hex
    proc, url, password = _start_demo(
        tmp_path, "--hosts", "3", "--duration", "0.5", env={"DEMO_TEST_MARK": mark}
    )
    try:
        api = Api(url, password)
        api.wait_online(["atlas", "borealis", "cirrus"])
        hosts = {h["id"]: h for h in api.get("/api/hosts").json()["hosts"]}
        assert hosts["borealis"]["status"]["os_kind"] == "macos"
        assert hosts["atlas"]["status"]["os_kind"] == "nixos"
        cmd = api.wait_state(api.command("borealis", "switch"), {"succeeded", "failed"})
        assert cmd["state"] == "succeeded"
        assert any("darwin-rebuild switch" in ln["text"] for ln in cmd["output"])
        assert httpx.get(f"{url}/health").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    wait_for(lambda: not pids_with_env("DEMO_TEST_MARK", mark), 15, "every demo process to exit")


def test_a_second_demo_run_keeps_the_history_and_retires_the_old_password(tmp_path):
    proc, url, first_password = _start_demo(tmp_path, "--hosts", "1", "--duration", "0")
    try:
        api = Api(url, first_password)
        api.wait_online(["atlas"])
        cid = api.command("atlas", "switch")
        api.wait_state(cid, {"succeeded"})
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    proc, url, second_password = _start_demo(tmp_path, "--hosts", "1")
    try:
        assert second_password != first_password
        refused = httpx.post(f"{url}/login", data={"username": "admin", "password": first_password})
        assert refused.status_code == 401
        api = Api(url, second_password)
        api.wait_online(["atlas"])  # its agent got a fresh token and connects with it
        assert api.get(f"/api/commands/{cid}").json()["state"] == "succeeded"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_without_nix_the_demo_says_how_to_install_it_in_one_line(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "git").symlink_to("/usr/bin/git")
    proc = subprocess.run(
        [sys.executable, "-m", "nixfleet", "demo", "--port", "0", "--data-dir", str(tmp_path)],
        env={**os.environ, "PATH": str(bindir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "demo: the demo builds its hosts' systems with Nix, which is not installed: "
        "apt-get install nix-bin (Debian), or see https://nixos.org/download"
    ]
