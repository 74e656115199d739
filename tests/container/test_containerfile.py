"""The dashboard's Containerfile: non-root, data on a volume, secrets never in the image,
a healthcheck that really tells a running dashboard from a stopped one, and hadolint clean.

Building the image needs base images these machines cannot pull, so it is not built here
(docs/deployment.md says so)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# A test dependency (pyproject's [test] extra): an older environment skips, saying why.
DockerfileParser = pytest.importorskip(
    "dockerfile_parse", reason="pip install -e '.[test]'"
).DockerfileParser

ROOT = Path(__file__).parents[2]
CONTAINERFILE = ROOT / "Containerfile"


@pytest.fixture(scope="module")
def parsed():
    return DockerfileParser(fileobj=io.BytesIO(CONTAINERFILE.read_bytes()))


def final_stage(parsed) -> list[dict]:
    starts = [i for i, ins in enumerate(parsed.structure) if ins["instruction"] == "FROM"]
    return parsed.structure[starts[-1] :]


def test_the_dashboard_runs_as_an_unprivileged_user(parsed):
    users = [i["value"] for i in final_stage(parsed) if i["instruction"] == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "a numeric non-root uid (runAsNonRoot can check it)"


def test_its_data_lives_on_a_volume_and_the_root_can_be_read_only(parsed):
    stage = final_stage(parsed)
    volumes = [json.loads(i["value"]) for i in stage if i["instruction"] == "VOLUME"]
    env = parsed.envs
    assert [env["NIXFLEET_DATA_DIR"]] in volumes
    assert env["HOME"] == env["NIXFLEET_DATA_DIR"], "git's HOME is writable with a read-only root"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "no .pyc writes into a read-only root"


def test_no_secret_is_baked_into_the_image(parsed):
    secret_words = ("HASH", "SECRET", "TOKEN", "PASSWORD", "ALERT_URLS")
    for key in parsed.envs:
        if any(w in key for w in secret_words):
            assert key.endswith("_FILE"), f"{key} would put a secret into the image"
    copied = [i["value"] for i in parsed.structure if i["instruction"] in ("COPY", "ADD")]
    assert all("secret" not in c.lower() for c in copied)


def _healthcheck_argv(parsed) -> list[str]:
    [check] = [i["value"] for i in parsed.structure if i["instruction"] == "HEALTHCHECK"]
    argv = json.loads(check.split("CMD", 1)[1].strip())
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def test_the_healthcheck_passes_on_a_running_dashboard_and_fails_on_a_stopped_one(
    parsed, make_fleet
):
    argv = _healthcheck_argv(parsed)
    rf = make_fleet(hosts=1, agents=False)
    env = {**os.environ, "NIXFLEET_PORT": str(rf.port)}
    assert subprocess.run(argv, env=env, timeout=30, capture_output=True).returncode == 0
    rf.kill_dashboard()
    assert subprocess.run(argv, env=env, timeout=30, capture_output=True).returncode != 0


def test_the_image_serves_the_dashboard_on_the_exposed_port(parsed):
    stage = final_stage(parsed)
    entry = [json.loads(i["value"]) for i in stage if i["instruction"] in ("ENTRYPOINT", "CMD")]
    assert entry == [["nixfleet"], ["serve"]]
    assert [i["value"] for i in stage if i["instruction"] == "EXPOSE"] == [
        parsed.envs["NIXFLEET_PORT"]
    ]


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
def test_hadolint_finds_nothing():
    res = subprocess.run(
        ["hadolint", "--config", str(ROOT / ".hadolint.yaml"), str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
