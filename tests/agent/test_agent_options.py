"""The agent's options: flags, NIXFLEET_AGENT_* variables and a TOML file, in that order,
each bad value stopping start-up with one line that names it as its source spells it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import run_cli, wait_for

# Enough for the options to load: an https URL that is never dialled in these tests, because
# each one stops at the option it is about (or at the plain-text URL, where said so).
REQUIRED = ["--host-id", "web-01", "--token-file", "/nonexistent/token", "--repo-dir", "/tmp/r"]


def _agent(flags, env=None, config=None, url="https://dash.example"):
    args = ["agent", *(["--url", url] if url else []), *flags]
    if config is not None:
        args += ["--config", str(config)]
    return run_cli(args, env)


def _one_line(res) -> str:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "env", "toml", "expected"),
    [
        (["--min-tls", "1.1"], {}, "", "agent: --min-tls must be one of 1.2, 1.3"),
        ([], {"NIXFLEET_AGENT_MIN_TLS": "1.1"}, "", "NIXFLEET_AGENT_MIN_TLS must be one of 1.2"),
        ([], {}, 'min_tls = "1.1"', "agent: min_tls in {config} must be one of 1.2, 1.3"),
        ([], {"NIXFLEET_AGENT_BACKOFF_FLOOR": "soon"}, "", "NIXFLEET_AGENT_BACKOFF_FLOOR: "),
        ([], {"NIXFLEET_AGENT_TIMEOUT": "reboot=1:2"}, "", "NIXFLEET_AGENT_TIMEOUT: unknown"),
        ([], {}, 'timeout = { switch = "20:10" }', "timeout in {config}: timeout 'switch=20:10'"),
        ([], {}, 'timeout = ["switch=ten"]', "timeout in {config}: timeout 'switch=ten' is not"),
        ([], {}, "pin = 7", "pin in {config}: "),
        ([], {}, 'hostid = "web-02"', "hostid in {config} is not an agent setting"),
        (
            [],
            {"NIXFLEET_AGENT_ENROLL_CODE_FILE": "/nonexistent/code"},
            "",
            "NIXFLEET_AGENT_ENROLL_CODE_FILE cannot read /nonexistent/code",
        ),
        ([], {}, "url = ", "agent: --config: {config} is not TOML"),
        (["--breaker-threshold", "0"], {}, "", "agent: --breaker-threshold must be at least 1"),
        (
            [],
            {"NIXFLEET_AGENT_BACKOFF_CAP": "0.5"},
            "",
            "agent: NIXFLEET_AGENT_BACKOFF_CAP must not be below the backoff floor (1 s)",
        ),
        ([], {}, "breaker_threshold = 2.5", "breaker_threshold in {config}: 2.5 is not a whole"),
        ([], {"NIXFLEET_AGENT_ALLOW_INSECURE": "maybe"}, "", "INSECURE: expected true or false"),
        ([], {}, 'theme_color = "red"', "theme_color in {config}: expected str matching regex"),
        (
            [],
            {},
            f'location = "{"x" * 201}"',
            "location in {config}: expected str of length <= 200",
        ),
        (
            [],
            {"NIXFLEET_AGENT_LABEL": "os=linux"},
            "",
            "NIXFLEET_AGENT_LABEL: 'os' is a host field",
        ),
        ([], {}, 'systemctl = ""', "systemctl in {config} must be a program name"),
        ([], {}, "repo_url = 7", "repo_url in {config}: expected text, got 7"),
    ],
    ids=[
        "flag",
        "env",
        "file",
        "env-number",
        "env-timeout",
        "file-timeout-table",
        "file-timeout-list",
        "file-pin-type",
        "file-unknown-key",
        "env-secret-file",
        "file-not-toml",
        "flag-below-bound",
        "env-cap-below-floor",
        "file-not-whole",
        "env-not-bool",
        "file-meta-pattern",
        "file-meta-length",
        "env-label-reserved",
        "file-systemctl-empty",
        "file-not-text",
    ],
)
def test_a_bad_value_stops_the_agent_with_one_line_naming_it_in_its_source(
    tmp_path, flags, env, toml, expected
):
    config = tmp_path / "agent.toml"
    config.write_text(toml + "\n")
    line = _one_line(_agent([*REQUIRED, *flags], env, config))
    assert expected.format(config=config) in line


def test_a_missing_required_option_names_all_three_ways_to_give_it(tmp_path):
    line = _one_line(_agent(REQUIRED, url=None))
    assert line.startswith("agent: --url is missing")
    assert "NIXFLEET_AGENT_URL" in line


def test_a_flag_beats_the_environment_which_beats_the_file(tmp_path):
    """The value checked (and so named, with the value) is the highest source's."""
    config = tmp_path / "agent.toml"
    config.write_text('pin = ["file-pin"]\n')
    env = {"NIXFLEET_AGENT_PIN": "env-pin"}
    assert "agent: --pin: pin 'flag-pin'" in _one_line(
        _agent([*REQUIRED, "--pin", "flag-pin"], env, config)
    )
    assert "agent: NIXFLEET_AGENT_PIN: pin 'env-pin'" in _one_line(_agent(REQUIRED, env, config))
    assert f"agent: pin in {config}: pin 'file-pin'" in _one_line(_agent(REQUIRED, {}, config))


def test_a_good_flag_hides_a_bad_value_below_it(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('min_tls = "1.0"\n')
    env = {"NIXFLEET_AGENT_MIN_TLS": "1.1"}
    res = _agent([*REQUIRED, "--min-tls", "1.3"], env, config, url="http://dash.example")
    # It got past every option and stopped only at the plain-text URL.
    assert "plain-text" in _one_line(res)


def test_an_agent_configured_by_file_environment_and_flags_enrolls_and_comes_online(make_fleet):
    """Most options from the TOML file, the secrets' files from NIXFLEET_AGENT_*_FILE-style
    variables, one flag: the dashboard shows the flag's location, the environment's device
    type and the file's colour; the code from the variable's file got the agent its token."""
    rf = make_fleet(hosts=1, agents=False)
    host = rf.host("atlas")
    api = rf.api()
    code = api.post("/api/hosts/atlas/enroll-code").json()["enroll_code"]
    code_file = host.root / "enroll-code"
    code_file.write_text(code + "\n")
    token_file = host.root / "new-token"
    config = host.root / "agent.toml"
    config.write_text(
        f"""
url = "http://127.0.0.1:{rf.port}"
host_id = "atlas"
repo_dir = "{host.root / "repo"}"
repo_url = "{rf.fleet.repo_url}"
state_dir = "{host.root / "state"}"
system_dir = "{host.root / "system"}"
os = "nixos"
systemd_run = "no"
allow_insecure = true
backoff_floor = 0.2
backoff_cap = 5
location = "from the file"
device_type = "from the file"
theme_color = "#112233"
command_rate = "10/60"
log_level = "warning"

[timeout]
switch = "900:3600"
"""
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NIXFLEET_")},
        "PATH": f"{rf.fleet.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "NIXFLEET_DEMO_SYSTEM_DIR": str(host.root / "system"),
        "NIXFLEET_TEST_MARK": rf.mark,
        "NIXFLEET_AGENT_TOKEN_FILE": str(token_file),
        "NIXFLEET_AGENT_ENROLL_CODE_FILE": str(code_file),
        "NIXFLEET_AGENT_LOCATION": "from the environment",
        "NIXFLEET_AGENT_DEVICE_TYPE": "from the environment",
    }
    log = (host.root / "agent.log").open("ab")
    rf.agents["atlas"] = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nixfleet",
            "agent",
            "--config",
            str(config),
            "--location",
            "from a flag",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api.wait_online(["atlas"])
    wait_for(lambda: api.host("atlas")["location"] == "from a flag", 10, "the metadata")
    shown = api.host("atlas")
    assert (shown["device_type"], shown["theme_color"]) == ("from the environment", "#112233")
    assert token_file.read_text().startswith("nfa_")
    assert token_file.stat().st_mode & 0o777 == 0o600
