"""The nix-darwin and home-manager agent modules, evaluated by the real module system, their
launchd jobs and systemd user service fed to the real `nixfleet agent` parser."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
from tests.nix.agentparse import parse_agent
from tests.nix.moduleeval import evaluate, needs_lib, real_nixfleet, systemd_argv

pytestmark = needs_lib

AGENT = """services.nixfleet-agent = {
  enable = true; url = "https://fleet.example.org"; repoUrl = "https://git.example.org/c.git";
  deviceType = "laptop"; """


@pytest.fixture(autouse=True)
def _keep_root_log_level():
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def test_the_darwin_daemon_runs_darwin_rebuild_and_logs_both_streams(monkeypatch):
    result = evaluate("darwin-agent", f"{{ {AGENT} }}; }}", hostName='"MacBook-Pro"')
    assert result["assertions"] == []
    job = result["launchdDaemons"]["nixfleet-agent"]["serviceConfig"]
    opts = parse_agent(real_nixfleet(job["ProgramArguments"]), monkeypatch)
    assert (opts.os, opts.macos_tool, opts.host_id) == (
        "macos",
        "darwin-rebuild",
        "macbook-pro",
    )
    assert opts.meta.device_type == "laptop" and opts.meta.location == ""
    assert job["StandardOutPath"] == job["StandardErrorPath"] == "/var/log/nixfleet-agent.log"
    assert "UserName" not in job and job["KeepAlive"] is True
    assert opts.state_dir == Path("/var/lib/nixfleet-agent")
    assert "mkdir -p /var/lib/nixfleet-agent" in result["activation"]["postActivation"]["text"]


def test_darwin_with_home_manager_runs_as_the_user_whose_profile_it_switches(monkeypatch):
    config = f"""{{ users.users.alice.home = "/Users/alice";
      {AGENT} tool = "home-manager"; user = "alice"; }}; }}"""
    result = evaluate("darwin-agent", config)
    assert result["assertions"] == []
    job = result["launchdDaemons"]["nixfleet-agent"]["serviceConfig"]
    opts = parse_agent(real_nixfleet(job["ProgramArguments"]), monkeypatch)
    assert opts.macos_tool == "home-manager"
    assert job["UserName"] == "alice"
    assert job["EnvironmentVariables"]["HOME"] == "/Users/alice"
    assert opts.state_dir == Path("/Users/alice/.local/state/nixfleet-agent")
    assert job["StandardErrorPath"] == "/Users/alice/Library/Logs/nixfleet-agent.log"
    assert "chown alice" in result["activation"]["postActivation"]["text"]


def test_darwin_home_manager_without_a_user_fires_an_assertion():
    failed = evaluate("darwin-agent", f'{{ {AGENT} tool = "home-manager"; }}; }}')["assertions"]
    assert len(failed) == 1 and "root's profile" in failed[0]


def test_home_manager_on_linux_is_a_user_service_switching_that_users_home(monkeypatch):
    result = evaluate("home-manager-agent", f'{{ {AGENT} hostId = "alice-laptop"; }}; }}')
    assert result["assertions"] == []
    unit = result["userServices"]["nixfleet-agent"]
    opts = parse_agent(real_nixfleet(systemd_argv(unit["Service"]["ExecStart"])), monkeypatch)
    assert (opts.macos_tool, opts.host_id) == ("home-manager", "alice-laptop")
    assert opts.state_dir == Path("/home/alice/.local/state/nixfleet-agent")
    assert opts.token_file == Path("/home/alice/.local/state/nixfleet-agent/token")
    assert unit["Unit"]["X-RestartIfChanged"] is False
    assert unit["Service"]["KillMode"] == "process"
    assert unit["Install"]["WantedBy"] == ["default.target"]
    assert result["launchdAgents"] == {}


def test_home_manager_on_macos_is_a_launchd_agent(monkeypatch):
    result = evaluate(
        "home-manager-agent", f'{{ {AGENT} hostId = "alice-mac"; }}; }}', darwin="true"
    )
    agent = result["launchdAgents"]["nixfleet-agent"]
    assert agent["enable"] is True and result["userServices"] == {}
    opts = parse_agent(real_nixfleet(agent["config"]["ProgramArguments"]), monkeypatch)
    assert opts.state_dir == Path("/Users/alice/.local/state/nixfleet-agent")
    assert agent["config"]["StandardOutPath"] == agent["config"]["StandardErrorPath"]


def test_home_manager_needs_an_explicit_host_id():
    from tests.nix.moduleeval import EvalError

    with pytest.raises(EvalError) as err:
        evaluate("home-manager-agent", f"{{ {AGENT} }}; }}")
    assert "services.nixfleet-agent.hostId" in str(err.value)


@pytest.mark.parametrize(
    "platform", ["nixos-agent", "nixos-dashboard", "darwin-agent", "home-manager-agent"]
)
def test_every_option_has_a_description(platform):
    options = evaluate(platform)["options"]
    ours = [
        o
        for o in options
        if o["name"].startswith(("services.nixfleet.", "services.nixfleet-agent."))
    ]
    assert len(ours) > 10
    missing = [o["name"] for o in ours if not (o.get("description") or "").strip()]
    assert missing == []


def test_the_compatibility_entry_point_gives_both_nixos_modules():
    options = {o["name"] for o in evaluate("nixos-compat")["options"]}
    assert {"services.nixfleet.enable", "services.nixfleet-agent.enable"} <= options


def test_darwin_with_a_private_repo_clones_first_then_execs_the_same_agent(tmp_path, monkeypatch):
    config = f'{{ {AGENT} repoCredential.tokenFile = "/run/agenix/repo-token"; }}; }}'
    job = evaluate("darwin-agent", config)["launchdDaemons"]["nixfleet-agent"]["serviceConfig"]
    sh, flag, script, *agent = job["ProgramArguments"]
    assert (sh, flag) == ("/bin/sh", "-c")
    # Run the wrapper for real, with a stand-in clone step and agent that record their turn.
    clone, program = tmp_path / "clone", tmp_path / "agent"
    clone.write_text(f"#!/bin/sh\necho clone >> {tmp_path}/order\n")
    program.write_text(f'#!/bin/sh\necho "agent $*" >> {tmp_path}/order\n')
    for f in (clone, program):
        f.chmod(0o755)
    store_clone = script.split(" && ")[0]
    assert "credential.helper" in Path(store_clone).read_text()
    wrapper = script.replace(store_clone, str(clone))
    subprocess.run([sh, flag, wrapper, str(program), *agent[1:]], check=True, timeout=10)
    order = (tmp_path / "order").read_text().splitlines()
    assert order[0] == "clone" and order[1] == "agent " + " ".join(agent[1:])
    opts = parse_agent(real_nixfleet(agent, tmp_path), monkeypatch)
    assert opts.repo_url == "https://git.example.org/c.git"
