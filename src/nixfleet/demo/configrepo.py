"""Generate the demo's fleet configuration repository.

The demo has no real Nix, but the agent still works on a genuine git checkout and
hands ``<checkout>#<host>`` to the (fake) rebuild commands, so the repo must look
like a real flake: a ``flake.nix`` with one configuration per host, a v7
``flake.lock`` and per-host health-check scripts under ``hosts/<host>/tests``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Collection, Sequence
from pathlib import Path

__all__ = ["BARE_NAME", "WORK_NAME", "ConfigRepoError", "commit_change", "create_config_repo"]

BARE_NAME = "fleet-config.git"
WORK_NAME = "fleet-config"

OS_KINDS = ("nixos", "macos")

# Restricted so a host id is always a safe directory name, a plain Nix path
# literal segment and a Nix string without escapes.
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# Pinned to the same day as the fake scripts' "25.05.20250101" system names.
_LOCK_LAST_MODIFIED = 1735689600

# Passed on every call so the generator works on machines with no global git
# identity and is not derailed by a user's signing setup.
_GIT_CONFIG = (
    "-c",
    "user.name=NixFleet Demo",
    "-c",
    "user.email=demo@nixfleet.invalid",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
    "-c",
    "core.hooksPath=/dev/null",
)

# Inherited from a caller that is itself running inside a git hook, these would
# point every command at the wrong repository.
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")


class ConfigRepoError(RuntimeError):
    """A git command failed while building or updating the demo config repo."""


def _git(args: Sequence[str], *, cwd: Path | None = None, branch: str = "main") -> str:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
    env["GIT_TERMINAL_PROMPT"] = "0"
    argv = ["git", *_GIT_CONFIG, "-c", f"init.defaultBranch={branch}", *args]
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise ConfigRepoError(
            f"{' '.join(argv)} failed with exit code {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout.strip()


def _fake_digest(seed: str) -> bytes:
    return hashlib.sha256(f"nixfleet-demo:{seed}".encode()).digest()


def _locked_github(owner: str, repo: str, ref: str) -> dict[str, object]:
    digest = _fake_digest(f"{owner}/{repo}/{ref}")
    return {
        "locked": {
            "lastModified": _LOCK_LAST_MODIFIED,
            "narHash": "sha256-" + base64.b64encode(_fake_digest(digest.hex())).decode(),
            "owner": owner,
            "repo": repo,
            "rev": digest.hex()[:40],
            "type": "github",
        },
        "original": {"owner": owner, "ref": ref, "repo": repo, "type": "github"},
    }


def _flake_lock(with_darwin: bool) -> str:
    nodes: dict[str, object] = {"nixpkgs": _locked_github("NixOS", "nixpkgs", "nixos-25.05")}
    root_inputs: dict[str, str] = {"nixpkgs": "nixpkgs"}
    if with_darwin:
        darwin = _locked_github("nix-darwin", "nix-darwin", "nix-darwin-25.05")
        # Same shape nix writes for `inputs.nixpkgs.follows = "nixpkgs"`.
        darwin = {"inputs": {"nixpkgs": ["nixpkgs"]}, **darwin}
        nodes["nix-darwin"] = darwin
        root_inputs["nix-darwin"] = "nix-darwin"
    nodes["root"] = {"inputs": root_inputs}
    lock = {"nodes": nodes, "root": "root", "version": 7}
    return json.dumps(lock, indent=2, sort_keys=True) + "\n"


def _flake_nix(hosts: Sequence[tuple[str, str]]) -> str:
    with_darwin = any(kind == "macos" for _, kind in hosts)
    lines = [
        "{",
        '  description = "NixFleet demo fleet configuration";',
        "",
        "  inputs = {",
        '    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";',
    ]
    if with_darwin:
        lines += [
            '    nix-darwin.url = "github:nix-darwin/nix-darwin/nix-darwin-25.05";',
            '    nix-darwin.inputs.nixpkgs.follows = "nixpkgs";',
        ]
    args = "{ self, nixpkgs, nix-darwin, ... }" if with_darwin else "{ self, nixpkgs, ... }"
    lines += ["  };", "", f"  outputs = {args}: {{", "    nixosConfigurations = {"]
    for host, kind in hosts:
        if kind == "nixos":
            lines += [
                f'      "{host}" = nixpkgs.lib.nixosSystem {{',
                '        system = "x86_64-linux";',
                f"        modules = [ ./hosts/{host}/configuration.nix ];",
                "      };",
            ]
    lines += ["    };", "", "    darwinConfigurations = {"]
    for host, kind in hosts:
        if kind == "macos":
            lines += [
                f'      "{host}" = nix-darwin.lib.darwinSystem {{',
                '        system = "aarch64-darwin";',
                f"        modules = [ ./hosts/{host}/configuration.nix ];",
                "        specialArgs = { inherit self; };",
                "      };",
            ]
    lines += ["    };", "  };", "}"]
    return "\n".join(lines) + "\n"


def _nixos_configuration(host: str) -> str:
    return f"""{{ config, lib, pkgs, ... }}:

{{
  networking.hostName = "{host}";
  time.timeZone = "UTC";

  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  fileSystems."/" = {{
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  }};
  fileSystems."/boot" = {{
    device = "/dev/disk/by-label/boot";
    fsType = "vfat";
  }};

  services.openssh = {{
    enable = true;
    settings.PermitRootLogin = "prohibit-password";
    settings.PasswordAuthentication = false;
  }};

  environment.systemPackages = with pkgs; [ git htop vim ];

  nix.settings.experimental-features = [ "nix-command" "flakes" ];
  nix.gc = {{
    automatic = true;
    dates = "weekly";
    options = "--delete-older-than 30d";
  }};

  system.stateVersion = "25.05";
}}
"""


def _darwin_configuration(host: str) -> str:
    return f"""{{ pkgs, self, ... }}:

{{
  networking.hostName = "{host}";
  networking.computerName = "{host}";

  nixpkgs.hostPlatform = "aarch64-darwin";

  environment.systemPackages = with pkgs; [ git htop coreutils ];

  nix.settings.experimental-features = [ "nix-command" "flakes" ];

  security.pam.services.sudo_local.touchIdAuth = true;

  system.configurationRevision = self.rev or self.dirtyRev or null;
  system.stateVersion = 6;
}}
"""


def _test_script(number: int, name: str, host: str, lines: Sequence[str], code: int) -> str:
    body = "\n".join(f"echo {json.dumps(line)}" for line in lines)
    stream = " >&2" if code else ""
    verdict = "FAIL" if code else "ok"
    return (
        "#!/usr/bin/env bash\n"
        f"# Demo health check T{number:02d} ({name}) for {host}; output only, no real probing.\n"
        "set -euo pipefail\n"
        f"{body}\n"
        f'echo "T{number:02d}-{name}: {verdict}"{stream}\n'
        f"exit {code}\n"
    )


def _host_tests(host: str, failing: bool) -> dict[str, str]:
    return {
        "T01-ssh.sh": _test_script(
            1, "ssh", host, [f"checking sshd on {host}", "sshd is listening on 0.0.0.0:22"], 0
        ),
        "T02-disk.sh": _test_script(
            2, "disk", host, ["checking free space on /", "/: 61% used (38G free)"], 0
        ),
        "T03-services.sh": _test_script(
            3,
            "services",
            host,
            ["checking systemd units"]
            + (["unit nginx.service entered failed state"] if failing else ["0 failed units"]),
            1 if failing else 0,
        ),
    }


def _readme(hosts: Sequence[tuple[str, str]]) -> str:
    rows = "\n".join(f"| {host} | {kind} |" for host, kind in hosts)
    return (
        "# fleet-config\n\n"
        "Demo fleet configuration generated by NixFleet.\n\n"
        "| host | os |\n|------|----|\n"
        f"{rows}\n"
    )


def _validate(hosts: Sequence[tuple[str, str]], failing: Collection[str], branch: str) -> None:
    if not hosts:
        raise ValueError("at least one host is required")
    seen: set[str] = set()
    for host, kind in hosts:
        if not _HOST_RE.fullmatch(host):
            raise ValueError(f"invalid host id {host!r}")
        if kind not in OS_KINDS:
            raise ValueError(f"host {host!r}: os_kind must be one of {OS_KINDS}, not {kind!r}")
        if host in seen:
            raise ValueError(f"duplicate host id {host!r}")
        seen.add(host)
    unknown = sorted(set(failing) - seen)
    if unknown:
        raise ValueError(f"failing hosts not in hosts: {unknown}")
    _git(["check-ref-format", "--branch", branch])


def _write(path: Path, text: str, *, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if executable:
        path.chmod(0o755)


def create_config_repo(
    root: Path,
    hosts: Sequence[tuple[str, str]],
    *,
    branch: str = "main",
    failing: Collection[str] = (),
) -> Path:
    """Return the path of a bare git repo (root / "fleet-config.git") holding a demo flake config.

    hosts: (host_id, os_kind) with os_kind "nixos" or "macos".
    The working clone used to author it stays at root / "fleet-config" so that
    commit_change() can add commits later.
    """
    _validate(hosts, failing, branch)
    root = Path(root).absolute()
    bare = root / BARE_NAME
    work = root / WORK_NAME
    for existing in (bare, work):
        if existing.exists():
            raise FileExistsError(f"{existing} already exists")
    root.mkdir(parents=True, exist_ok=True)

    _git(["init", "--quiet", "--bare", str(bare)], branch=branch)
    # Older git ignores init.defaultBranch; clones check out whatever HEAD names.
    _git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], cwd=bare)
    _git(["clone", "--quiet", str(bare), str(work)], branch=branch)
    _git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], cwd=work)

    failing_set = set(failing)
    with_darwin = any(kind == "macos" for _, kind in hosts)
    _write(work / "README.md", _readme(hosts))
    _write(work / "flake.nix", _flake_nix(hosts))
    _write(work / "flake.lock", _flake_lock(with_darwin))
    scripts: list[str] = []
    for host, kind in hosts:
        host_dir = work / "hosts" / host
        config = _nixos_configuration(host) if kind == "nixos" else _darwin_configuration(host)
        _write(host_dir / "configuration.nix", config)
        for name, text in _host_tests(host, host in failing_set).items():
            _write(host_dir / "tests" / name, text, executable=True)
            scripts.append(f"hosts/{host}/tests/{name}")
        if host in failing_set:
            _write(
                host_dir / "FAIL_BUILD",
                f"demo: {host} is set up to fail its build; delete this file to fix it\n",
            )

    _git(["add", "--all"], cwd=work)
    # Record the exec bit even where the filesystem does not keep it (core.fileMode=false).
    _git(["update-index", "--chmod=+x", "--", *scripts], cwd=work)
    _git(["commit", "--quiet", "-m", "Initial fleet configuration"], cwd=work)
    _git(["push", "--quiet", "--set-upstream", "origin", f"HEAD:refs/heads/{branch}"], cwd=work)
    return bare


def commit_change(
    root: Path, message: str, path: str = "README.md", text: str | None = None
) -> str:
    """Write/append a file in the working clone, commit, push to the bare repo.

    Returns the new full commit hash. With text=None a line holding the message is
    appended to the file; otherwise the file is replaced by text. The commit is made
    even if the content is unchanged, so every call yields a distinct commit for a
    deploy to pick up.
    """
    work = Path(root).absolute() / WORK_NAME
    if not (work / ".git").is_dir():
        raise FileNotFoundError(f"{work} is not a config repo working clone")
    target = (work / path).resolve()
    if not target.is_relative_to(work.resolve()) or target == work.resolve():
        raise ValueError(f"path {path!r} is outside the working clone")
    if (work / ".git").resolve() in (target, *target.parents):
        raise ValueError(f"path {path!r} points into the .git directory")

    target.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        with target.open("a", encoding="utf-8") as fh:
            fh.write(f"{message}\n")
    else:
        target.write_text(text, encoding="utf-8")
    if target.suffix == ".sh":
        # Host tests and helpers are run directly: without +x they fail with exit 127.
        target.chmod(0o755)

    rel = target.relative_to(work.resolve()).as_posix()
    _git(["add", "--", rel], cwd=work)
    _git(["commit", "--quiet", "--allow-empty", "-m", message], cwd=work)
    _git(["push", "--quiet", "origin", "HEAD"], cwd=work)
    return _git(["rev-parse", "HEAD"], cwd=work)
