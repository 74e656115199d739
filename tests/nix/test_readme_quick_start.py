"""The README's quick start is what a NixOS user copies: its dashboard-host and fleet-host
configurations evaluate with the modules, and what they generate is what the text says."""

from __future__ import annotations

import re

from tests.nix.moduleeval import ROOT, evaluate, needs_lib

pytestmark = needs_lib

# What the README's configurations use besides the modules: agenix's age.secrets and
# services.nginx, declared as small as they are used.
AGENIX_AND_NGINX = """{ lib, ... }: {
  options.age.secrets = lib.mkOption {
    type = lib.types.attrsOf (lib.types.submodule ({ name, ... }: {
      options.file = lib.mkOption { type = lib.types.path; };
      options.path = lib.mkOption { type = lib.types.str; default = "/run/agenix/${name}"; };
    }));
    default = { };
  };
  options.services.nginx = lib.mkOption { type = lib.types.attrsOf lib.types.anything; };
}"""


def readme_block(after: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    return re.search(r"```nix\n(.*?)```", text[start:], re.S).group(1)


def with_stubs(block: str) -> str:
    # The blocks are files of the user's repo (hosts/<name>/default.nix): ../../secrets/… are
    # paths there; here they only need to be paths.
    module = block.replace("../../secrets/", "./secrets/")
    return f"{{ imports = [ ({AGENIX_AND_NGINX}) ({module}) ]; }}"


def test_the_readme_dashboard_host_evaluates_with_its_secrets_as_credentials():
    result = evaluate("nixos-dashboard", with_stubs(readme_block("The dashboard host (")))
    assert result["assertions"] == []
    unit = result["systemd"]["nixfleet"]
    creds = unit["serviceConfig"]["LoadCredential"]
    assert "admin-password-hash:/run/agenix/nixfleet-admin" in creds
    assert "config-repo-ssh-key:/run/agenix/nixfleet-deploy-key" in creds
    assert unit["environment"]["NIXFLEET_TRUSTED_PROXIES"] == "127.0.0.1"
    assert unit["environment"]["NIXFLEET_CONFIG_REPO"] == "git@git.example.org:me/nix-config.git"


def test_the_readme_fleet_host_evaluates_and_enrolls_with_its_code():
    result = evaluate("nixos-agent", with_stubs(readme_block("A fleet host (")))
    assert result["assertions"] == []
    config = result["agentConfig"]
    assert (config["host_id"], config["url"]) == ("web-01", "https://fleet.example.org")
    assert (config["location"], config["device_type"]) == ("rack 3", "server")
    assert "theme_color" not in config  # unset: the dashboard's stays
    unit = result["systemd"]["nixfleet-agent"]
    assert unit["serviceConfig"]["LoadCredential"] == ["enroll-code:/run/agenix/nixfleet-enroll"]
    assert unit["serviceConfig"]["ExecStartPre"], "the private repo is cloned with its key"
