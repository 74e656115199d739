"""`nix flake show` and `nix flake check --no-build` on the project's flake, run for real by
Debian's Nix, with the nixpkgs input (which cannot be downloaded here) replaced by
tests/nix/fake-nixpkgs: nixpkgs' real lib and trivial derivations."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from tests.nix.moduleeval import LIB, ROOT, needs_lib

pytestmark = [
    needs_lib,
    pytest.mark.skipif(shutil.which("nix") is None, reason="needs Debian's nix-bin"),
    pytest.mark.skipif(not (ROOT / ".git").exists(), reason="the flake is read from its git tree"),
]


def nix_flake(*args: str) -> subprocess.CompletedProcess[str]:
    assert LIB is not None
    cmd = ["nix", "--extra-experimental-features", "nix-command flakes", "flake", *args]
    cmd += [f"git+file://{ROOT}", "--no-write-lock-file"]
    cmd += ["--override-input", "nixpkgs", f"path:{ROOT}/tests/nix/fake-nixpkgs"]
    cmd += ["--override-input", "nixpkgs/lib", f"path:{LIB.parent}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_nix_flake_show_lists_every_output():
    res = nix_flake("show", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    for system in ("x86_64-linux", "aarch64-linux", "x86_64-darwin", "aarch64-darwin"):
        assert set(out["packages"][system]) == {"default", "nixfleet"}
        assert out["packages"][system]["default"]["name"] == "nixfleet-0.1.0"
        assert out["apps"][system]["default"]["type"] == "app"
        assert set(out["checks"][system]) == {"modules", "package"}
    assert set(out["nixosModules"]) == {"agent", "dashboard", "default"}
    assert out["overlays"]["default"]["type"] == "nixpkgs-overlay"


def test_nix_flake_check_evaluates_everything_and_the_module_checks_hold():
    res = nix_flake("check", "--no-build")
    assert res.returncode == 0, res.stderr
    # The two outputs nix does not know are the community's conventional names.
    unknown = sorted(line for line in res.stderr.splitlines() if "unknown flake output" in line)
    assert unknown == [
        "warning: unknown flake output 'darwinModules'",
        "warning: unknown flake output 'homeManagerModules'",
    ]
