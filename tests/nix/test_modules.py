"""Every Nix file parses, and the package lists every runtime dependency pyproject.toml has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib

import pytest
from tests.nix.moduleeval import LIB, ROOT, needs_lib

NIX_FILES = sorted([*ROOT.glob("nix/**/*.nix"), ROOT / "flake.nix", *ROOT.glob("tests/nix/*.nix")])


@pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="needs Debian's nix-bin")
@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_nix_file_parses(path):
    res = subprocess.run(["nix-instantiate", "--parse", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~ ]", spec, maxsplit=1)[0].lower().replace("_", "-")


@needs_lib
def test_the_package_lists_every_runtime_dependency_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [_requirement_name(d) for d in project["dependencies"]]
    others = [n for n in wanted if n not in ("uvicorn", "sqlalchemy")]
    names = "[ " + " ".join(json.dumps(n) for n in others) + " ]"
    res = subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            str(ROOT / "tests/nix/package-deps.nix"),
            "--arg",
            "lib",
            f"import {LIB}",
            "--arg",
            "names",
            names,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    pkg = json.loads(res.stdout)
    assert (pkg["pname"], pkg["version"]) == (project["name"], project["version"])
    assert pkg["deps"][: len(wanted)] == wanted, "one nixpkgs attribute per dependency, in order"
    # The extra: sqlalchemy[asyncio] (uvicorn's httptools and uvloop are named, not its
    # `standard`, whose watchfiles the dashboard never uses).
    assert set(pkg["deps"][len(wanted) :]) == {"greenlet"}
