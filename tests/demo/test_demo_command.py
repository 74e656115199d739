"""`nixfleet demo` starts a usable fleet with one command and stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid

import httpx

from conftest import Api, wait_for


def _marked(mark: str) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if f"DEMO_TEST_MARK={mark}".encode() in fh.read().split(b"\0"):
                        pids.add(int(entry))
            except OSError:
                continue
    return pids


def test_the_demo_prints_url_and_password_runs_hosts_and_stops_on_ctrl_c(tmp_path):
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nixfleet",
            "demo",
            "--hosts",
            "3",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "demo"),
            "--duration",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DEMO_TEST_MARK": mark},
    )
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        url = re.search(r"http://127\.0\.0\.1:\d+/", lines[0]).group(0)
        password = re.search(r"password \(this run only\): (\S+)", lines[1]).group(1)
        api = Api(url.rstrip("/"), password)
        api.wait_online(["atlas", "borealis", "cirrus"])
        hosts = {h["id"]: h for h in api.get("/api/hosts").json()["hosts"]}
        assert hosts["borealis"]["status"]["os_kind"] == "macos"
        assert hosts["atlas"]["status"]["os_kind"] == "nixos"
        cmd = api.wait_state(api.command("borealis", "switch"), {"succeeded", "failed"})
        assert cmd["state"] == "succeeded"
        assert any("darwin-rebuild switch" in ln["text"] for ln in cmd["output"])
        assert httpx.get(url + "health").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    wait_for(lambda: not _marked(mark), 15, "every demo process to exit")


def test_a_second_demo_run_reuses_its_data_with_a_new_password(tmp_path):
    for _ in range(2):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nixfleet",
                "demo",
                "--hosts",
                "1",
                "--port",
                "0",
                "--data-dir",
                str(tmp_path / "demo"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            lines = [proc.stdout.readline() for _ in range(2)]
            url = re.search(r"http://127\.0\.0\.1:\d+", lines[0]).group(0)
            password = re.search(r"password \(this run only\): (\S+)", lines[1]).group(1)
            Api(url, password).wait_online(["atlas"])
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        time.sleep(0.2)
