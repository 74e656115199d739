"""The generated units, rendered as NixOS writes them, scored by the real
`systemd-analyze security --offline`: the dashboard and the (root) agent reach "OK"."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from tests.nix.moduleeval import evaluate, exposure, needs_lib


def _offline_analyze() -> bool:
    if shutil.which("systemd-analyze") is None:
        return False
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True).stdout
    match = re.search(r"systemd (\d+)", out)
    return bool(match) and int(match.group(1)) >= 250  # --offline came with 250


pytestmark = [
    needs_lib,
    pytest.mark.skipif(not _offline_analyze(), reason="needs systemd-analyze >= 250 (--offline)"),
]
SECRETS = """adminPasswordHashFile = "/run/a"; agentTokenHashSecretFile = "/run/b";
  sessionSecretsFile = "/run/c";"""


@pytest.mark.parametrize("port", [8000, 443])
def test_the_dashboard_unit_is_ok_for_systemd_analyze_security(tmp_path, port):
    result = evaluate(
        "nixos-dashboard",
        f"{{ services.nixfleet = {{ enable = true; {SECRETS} port = {port}; }}; }}",
    )
    score, level = exposure(result["systemd"]["nixfleet"], tmp_path, "nixfleet")
    assert level in ("PERFECT", "SAFE", "OK"), score
    assert score < 2.0


def test_the_root_agent_unit_is_still_ok_for_systemd_analyze_security(tmp_path):
    config = """{ services.nixfleet-agent = {
      enable = true; url = "https://x"; repoUrl = "https://y"; }; }"""
    score, level = exposure(
        evaluate("nixos-agent", config)["systemd"]["nixfleet-agent"], tmp_path, "a"
    )
    assert level in ("PERFECT", "SAFE", "OK"), score
