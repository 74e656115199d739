"""The NixOS and nix-darwin modules parse, and pass the agent only options it accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

NIX_DIR = Path(__file__).parents[2] / "nix"


@pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="needs Debian's nix-bin")
@pytest.mark.parametrize("path", sorted(NIX_DIR.glob("*.nix")), ids=lambda p: p.name)
def test_the_nix_file_parses(path):
    res = subprocess.run(["nix-instantiate", "--parse", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_every_flag_the_modules_pass_is_an_agent_option():
    help_text = subprocess.run(
        ["nixfleet", "agent", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": str(Path(shutil.which("nixfleet")).parent)},
    ).stdout
    flags = set()
    for path in NIX_DIR.glob("*.nix"):
        flags |= set(re.findall(r'"(--[a-z-]+)"', path.read_text()))
    assert flags, "no flags found in the modules"
    for flag in flags:
        assert flag in help_text, f"{flag} is passed by a module but unknown to the agent"
