"""The NixOS agent module, evaluated by the real module system: the unit it generates, and
the command line fed to the real `nixfleet agent` parser."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.nix.agentparse import parse_agent
from tests.nix.moduleeval import (
    EvalError,
    evaluate,
    load_credentials,
    needs_lib,
    real_nixfleet,
    systemd_argv,
)

from nixfleet.core.commands import CommandKind
from nixfleet.core.wire import HostMeta

pytestmark = needs_lib

MINIMAL = """{ lib, ... }: { services.nixfleet-agent = {
  enable = true; url = lib.mkDefault "https://fleet.example.org";
  repoUrl = "https://git.example.org/c.git";
}; }"""


def minimal_with(settings: str) -> str:
    return f"{{ imports = [ ({MINIMAL}) {{ services.nixfleet-agent = {{ {settings} }}; }} ]; }}"


PIN = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def full(tmp: Path) -> str:
    for name in ("enroll", "key"):
        (tmp / name).write_text(f"{name}-secret\n")
    return f"""{{ services.nixfleet-agent = {{
      enable = true;
      url = "wss://fleet.example.org:8443";
      hostId = "Lab-PC ";
      repoUrl = "git@git.example.org:me/nix-config.git";
      branch = "release/2026";
      tokenFile = "/run/agenix/agent-token";
      enrollCodeFile = "{tmp}/enroll";
      location = "rack 3 — 50% full, $HOME \\"east\\"";
      deviceType = "server";
      themeColor = "#3B82f6";
      labels = {{ role = "web"; "site.code" = "ams-1"; }};
      caFile = "/etc/ssl/fleet-ca.pem";
      pins = [ "{PIN}" ];
      minTls = "1.3";
      clientCertFile = "/etc/nixfleet/client.pem";
      clientKeyFile = "{tmp}/key";
      commandRate = "3/60";
      timeouts.switch = {{ warn = 100; kill = 200; }};
      timeouts.test = {{ warn = 5; kill = 50; }};
      backoff = {{ floor = 2.5; cap = 120; }};
      breaker = {{ threshold = 7; probeInterval = 30; }};
      logLevel = "debug";
      extraArgs = [ "--system-dir" "/run/other" ];
    }}; }}"""


def agent_unit(config: str, **args: str) -> dict:
    result = evaluate("nixos-agent", config, **args)
    assert result["assertions"] == []
    return result["systemd"]["nixfleet-agent"]


@pytest.fixture(autouse=True)
def _keep_root_log_level():
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def test_a_minimal_agent_unit_starts_the_agent_for_this_host(monkeypatch):
    unit = agent_unit(MINIMAL)
    opts = parse_agent(real_nixfleet(systemd_argv(unit["serviceConfig"]["ExecStart"])), monkeypatch)
    assert opts.url == "https://fleet.example.org"
    assert opts.host_id == "web-01"  # networking.hostName
    assert opts.token_file == Path("/var/lib/nixfleet-agent/token")
    assert opts.repo_dir == Path("/var/lib/nixfleet-agent/config")
    assert opts.state_dir == Path("/var/lib/nixfleet-agent")
    assert (opts.os, opts.systemd_run) == ("nixos", "yes")
    # Unset metadata is sent empty: it blanks nothing, and the host owns no labels.
    assert opts.meta == HostMeta(), "metadata the module does not set must be empty"
    assert opts.enroll_code == ""
    assert unit["restartIfChanged"] is False
    assert "network-online.target" in unit["after"] and "network-online.target" in unit["wants"]
    assert unit["wantedBy"] == ["multi-user.target"]
    cfg = unit["serviceConfig"]
    assert cfg["StateDirectory"] == "nixfleet-agent" and cfg["StateDirectoryMode"] == "0700"
    assert cfg["LoadCredential"] == [] and cfg["ExecStartPre"] == []
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectKernelModules", "RestrictSUIDSGID"):
        assert cfg[key] is True, key


def test_every_agent_option_reaches_the_agent(tmp_path, monkeypatch):
    unit = agent_unit(full(tmp_path))
    cfg = unit["serviceConfig"]
    creds = load_credentials(unit, tmp_path / "creds")
    opts = parse_agent(real_nixfleet(systemd_argv(cfg["ExecStart"], creds)), monkeypatch)
    assert opts.url == "wss://fleet.example.org:8443"
    assert opts.host_id == "lab-pc"
    assert opts.repo_url == "git@git.example.org:me/nix-config.git"
    assert opts.branch == "release/2026"
    assert opts.token_file == Path("/run/agenix/agent-token")
    assert opts.enroll_code == "enroll-secret"
    assert opts.meta.location == 'rack 3 — 50% full, $HOME "east"'
    assert (opts.meta.device_type, opts.meta.theme_color) == ("server", "#3B82f6")
    assert opts.meta.labels == {"role": "web", "site.code": "ams-1"}
    t = opts.transport
    assert t.ca_file == Path("/etc/ssl/fleet-ca.pem")
    assert len(t.pins) == 1 and t.min_tls == "1.3"
    assert t.client_cert == Path("/etc/nixfleet/client.pem")
    assert t.client_key == creds / "client-key"
    assert (creds / "client-key").read_text() == "key-secret\n"
    assert (t.backoff_floor_s, t.backoff_cap_s) == (2.5, 120.0)
    assert (t.breaker_threshold, t.probe_interval_s) == (7, 30.0)
    assert opts.command_rate == (3, 60.0)
    assert (
        opts.rules[CommandKind.SWITCH].warn_after_s,
        opts.rules[CommandKind.SWITCH].kill_after_s,
    ) == (
        100,
        200,
    )
    assert opts.rules[CommandKind.TEST].kill_after_s == 50
    assert opts.system_dir == Path("/run/other")
    assert logging.getLogger().level == logging.DEBUG
    # The secrets are systemd credentials: neither they nor their own paths are in the
    # command line or the configuration file (which is in the world-readable store).
    config_file = cfg["ExecStart"].split("--config ")[1].split(" ")[0]
    for text in (cfg["ExecStart"], Path(config_file).read_text()):
        assert str(tmp_path / "enroll") not in text and "enroll-secret" not in text
    assert sorted(cfg["LoadCredential"]) == [
        f"client-key:{tmp_path}/key",
        f"enroll-code:{tmp_path}/enroll",
    ]


@pytest.mark.parametrize(
    ("setting", "option"),
    [
        ('hostId = "web_01";', "services.nixfleet-agent.hostId"),
        ('themeColor = "blue";', "services.nixfleet-agent.themeColor"),
        ('labels = { role = "web server"; };', "services.nixfleet-agent.labels"),
        ("tokenFile = ./tests/nix/moduleeval.py;", "services.nixfleet-agent.tokenFile"),
        ('tokenFile = "${./tests/nix/moduleeval.py}";', "services.nixfleet-agent.tokenFile"),
        ('enrollCodeFile = "relative/code";', "services.nixfleet-agent.enrollCodeFile"),
        ('pins = [ "sha256/short=" ];', "services.nixfleet-agent.pins"),
        ('commandRate = "0/60";', "services.nixfleet-agent.commandRate"),
        ('url = "ftp://fleet";', "services.nixfleet-agent.url"),
        ('branch = "-x";', "services.nixfleet-agent.branch"),
    ],
)
def test_a_wrong_value_fails_evaluation_naming_the_option(setting, option):
    config = minimal_with(setting)
    with pytest.raises(EvalError) as err:
        agent_unit(config)
    assert f"option `{option}" in str(err.value), str(err.value)


def test_a_host_named_in_upper_case_is_canonicalised_like_the_dashboard_does(monkeypatch):
    unit = agent_unit(MINIMAL, hostName='"Web01"')
    opts = parse_agent(real_nixfleet(systemd_argv(unit["serviceConfig"]["ExecStart"])), monkeypatch)
    assert opts.host_id == "web01"


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ('url = "http://fleet.example.org";', "allowInsecure"),
        ("timeouts.switch = { warn = 300; kill = 200; };", "warn must be below kill"),
        ("timeouts.stop = { warn = 1; kill = 2; };", "timeouts.stop"),
        ("backoff = { floor = 10; cap = 5; };", "backoff.cap"),
        (
            'repoCredential = { sshKeyFile = "/run/k"; tokenFile = "/run/t"; };',
            "not both",
        ),
        ('clientKeyFile = "/run/key";', "clientCertFile"),
    ],
)
def test_an_inconsistent_configuration_fires_an_assertion(setting, words):
    config = minimal_with(setting)
    failed = evaluate("nixos-agent", config)["assertions"]
    assert len(failed) == 1 and words in failed[0], failed


def test_plain_http_is_accepted_when_insecure_is_asked_for(monkeypatch):
    config = minimal_with('url = "http://127.0.0.1:8000"; allowInsecure = true;')
    unit = agent_unit(config)
    opts = parse_agent(real_nixfleet(systemd_argv(unit["serviceConfig"]["ExecStart"])), monkeypatch)
    assert opts.transport.allow_insecure is True


def test_the_package_defaults_to_the_flakes_own():
    assert evaluate("nixos-agent", MINIMAL)["agentPackage"].endswith("-nixfleet")
