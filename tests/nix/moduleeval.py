"""Evaluate the project's modules with nixpkgs' real lib, and read what they generate the way
systemd and launchd would, so the result can be fed to the real `nixfleet` parsers."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
EVAL = ROOT / "tests" / "nix" / "eval.nix"
FAKE_STORE = "/nix/store/00000000000000000000000000000000-"


def nixpkgs_lib() -> Path | None:
    for candidate in (os.environ.get("NIXPKGS_LIB"), ROOT.parent / "shared/nixpkgs-lib/lib"):
        if candidate and (Path(candidate) / "default.nix").is_file():
            return Path(candidate)
    return None


LIB = nixpkgs_lib()
needs_lib = pytest.mark.skipif(
    LIB is None or shutil.which("nix-instantiate") is None,
    reason="needs nixpkgs' lib (../shared/nixpkgs-lib/lib or $NIXPKGS_LIB) and nix-instantiate",
)


class EvalError(Exception):
    """The module system refused the configuration; the message is Nix's."""


def evaluate(platform: str, config: str = "{ }", **args: str) -> dict[str, Any]:
    """Return the evaluated parts of `platform`'s module with `config` (a Nix expression)."""
    # Read-write: files the modules write with builtins.toFile (scripts) land in the store.
    cmd = ["nix-instantiate", "--eval", "--read-write-mode", "--strict", "--json", str(EVAL)]
    cmd += ["--arg", "lib", f"import {LIB}", "--argstr", "platform", platform]
    cmd += ["--arg", "config", config]
    for name, value in args.items():
        cmd += ["--arg", name, value]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    if res.returncode != 0:
        raise EvalError(res.stderr)
    return json.loads(res.stdout)


def systemd_argv(line: str, credentials: Path | None = None) -> list[str]:
    """Return the argv systemd runs for an ExecStart= line (quotes, %%, %d, $$)."""

    def specifier(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "%d":
            assert credentials is not None, "ExecStart uses %d but the unit has no credentials"
            return str(credentials)
        if token in ("%%", "$$"):
            return token[0]
        raise AssertionError(f"unexpected systemd specifier {token} in {line!r}")

    return [re.sub(r"%.|\$\$|\$\{?\w", specifier, a) for a in shlex.split(line)]


def environment(env: dict[str, str], credentials: Path) -> dict[str, str]:
    """Return a unit's Environment= with systemd's %d expanded."""
    return {
        k: v.replace("%%", "\0").replace("%d", str(credentials)).replace("\0", "%")
        for k, v in env.items()
    }


def load_credentials(unit: dict[str, Any], directory: Path) -> Path:
    """Copy every LoadCredential=NAME:PATH into directory, as systemd does before start."""
    directory.mkdir(exist_ok=True)
    for entry in unit["serviceConfig"].get("LoadCredential", []):
        name, _, path = entry.partition(":")
        shutil.copyfile(path, directory / name)
        (directory / name).chmod(0o400)
    return directory


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"no TOML form for {value!r}")


def json2toml(source: Path, target: Path) -> Path:
    """Write source (JSON of a flat table) as TOML, as remarshal does for formats.toml."""
    data = json.loads(source.read_text())
    target.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in data.items()))
    return target


def real_nixfleet(argv: list[str], workdir: Path | None = None) -> list[str]:
    """Return argv with the evaluation's placeholder package replaced by the installed one,
    and a `--config` file (JSON from the stand-in formats.toml) converted to TOML."""
    assert argv[0] == f"{FAKE_STORE}nixfleet/bin/nixfleet", argv[0]
    args = argv[1:]
    if "--config" in args:
        i = args.index("--config") + 1
        source = Path(args[i])
        assert source.name.endswith(".toml.json"), source
        target = (workdir or Path(tempfile.mkdtemp())) / source.name.removesuffix(".json")
        args[i] = str(json2toml(source, target))
    return args


def unit_file(unit: dict[str, Any]) -> str:
    """Return the unit file NixOS writes for a systemd.services entry (lists: one line each)."""

    def render(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    lines = ["[Unit]", f"Description={unit['description']}", "[Service]"]
    for key, value in unit["serviceConfig"].items():
        lines += [f"{key}={render(v)}" for v in (value if isinstance(value, list) else [value])]
    lines += [f'Environment="{k}={v}"' for k, v in unit["environment"].items()]
    return "\n".join([*lines, "[Install]", "WantedBy=multi-user.target", ""])


def exposure(unit: dict[str, Any], directory: Path, name: str) -> tuple[float, str]:
    """Return `systemd-analyze security --offline` 's overall exposure and its level."""
    path = directory / f"{name}.service"
    path.write_text(unit_file(unit))
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", res.stdout)
    assert match, res.stdout + res.stderr
    return float(match.group(1)), match.group(2)
