"""The flake's outputs evaluate (with nixpkgs' real lib standing in for the nixpkgs input,
which cannot be downloaded here), its module checks hold, and flake.lock pins a release."""

from __future__ import annotations

import json
import re
import subprocess

from tests.nix.moduleeval import LIB, ROOT, needs_lib

pytestmark = needs_lib


def test_the_flake_has_every_output_a_flake_user_imports():
    res = subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--read-write-mode",
            "--strict",
            "--json",
            str(ROOT / "tests/nix/flake-outputs.nix"),
            "--arg",
            "lib",
            f"import {LIB}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["inputs"] == "github:NixOS/nixpkgs/nixos-25.11"
    assert {"packages", "overlays", "nixosModules", "darwinModules", "homeManagerModules"} <= set(
        out["top"]
    )
    assert {"apps", "checks"} <= set(out["top"])
    assert out["nixos"] == ["agent", "dashboard", "default"]
    assert "agent" in out["darwin"] and "agent" in out["hm"]
    assert out["packages"] == ["default", "nixfleet"]
    assert out["app"]["type"] == "app" and out["app"]["program"].endswith("/bin/nixfleet")
    assert out["checks"] == ["modules", "package"]
    assert out["modulesCheck"] == "nixfleet-module-checks"
    assert out["overlay"] == "nixfleet"


def test_every_module_check_of_the_flake_holds():
    res = subprocess.run(
        ["nix-instantiate", "--eval", "--read-write-mode", "--strict", "--json", "-E",
         f"import {ROOT}/tests/nix/checks.nix {{ lib = import {LIB}; }}"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)
    assert len(results) >= 10
    assert [name for name, ok in results.items() if not ok] == []


def test_the_lock_pins_nixpkgs_to_a_release_commit():
    lock = json.loads((ROOT / "flake.lock").read_text())
    node = lock["nodes"]["nixpkgs"]
    assert lock["nodes"]["root"]["inputs"] == {"nixpkgs": "nixpkgs"} and lock["version"] == 7
    assert re.fullmatch(r"nixos-\d\d\.\d\d", node["original"]["ref"])
    assert re.fullmatch(r"[0-9a-f]{40}", node["locked"]["rev"])
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", node["locked"]["narHash"])
