"""Generate the demo's fleet configuration repository: a real flake with no inputs.

Its outputs are one system per host (`nixosConfigurations.<h>.config.system.build.toplevel`,
`darwinConfigurations.<h>.system`, `homeConfigurations.<h>.activationPackage`), built by
real Nix from `standin/lib.nix`, which stands in for nixpkgs with tiny `/bin/sh`
derivations laid out like the real systems. `standin/pkgs.json` is the stand-in's package
set and `flake.lock` records which nixpkgs it stands for; `update_nixpkgs` moves both, as
`nix flake update` would. Per-host health checks live under `hosts/<host>/tests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Collection, Sequence
from pathlib import Path

__all__ = [
    "BARE_NAME",
    "WORK_NAME",
    "ConfigRepoError",
    "commit_change",
    "create_config_repo",
    "update_nixpkgs",
]

BARE_NAME = "fleet-config.git"
WORK_NAME = "fleet-config"

OS_KINDS = ("nixos", "macos")

# Restricted so a host id is always a safe directory name, a plain Nix path
# literal segment and a Nix string without escapes.
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

STANDIN = Path(__file__).with_name("standin")
PACKAGES = "standin/pkgs.json"

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


def _digest(seed: str) -> bytes:
    return hashlib.sha256(f"nixfleet-demo:{seed}".encode()).digest()


def _system() -> str:
    """Return the Nix system of this machine's Linux builds (the stand-in builds here)."""
    machine = platform.machine().lower()
    return f"{ {'arm64': 'aarch64', 'amd64': 'x86_64'}.get(machine, machine) }-linux"


def _first_pin() -> int:
    """Return the day of the stand-in's first nixpkgs pin: three weeks before today."""
    return (int(time.time()) // 86400 - 21) * 86400


def _package_set(generation: int, first: int) -> dict[str, object]:
    """Return the stand-in's package set after `generation` nixpkgs updates (0 = first).

    Each update moves the lock a week on from `first` and brings the next 6.6 and 6.12
    kernel point releases, as an update of a stable nixpkgs channel does.
    """
    day = first + generation * 7 * 86400
    rev = hashlib.sha1(f"nixpkgs-{generation}".encode(), usedforsecurity=False).hexdigest()
    date = time.strftime("%Y%m%d", time.gmtime(day))
    return {
        "nixpkgs": {
            "release": "25.05",
            "codeName": "Warbler",
            "versionSuffix": f"{date}.{rev[:7]}",
            "rev": rev,
            "lastModified": day,
            "generation": generation,
            "first": first,
            "darwinRev": hashlib.sha1(
                f"nix-darwin-{generation}".encode(), usedforsecurity=False
            ).hexdigest()[:7],
        },
        "kernels": {
            "linux_6_6": {"version": f"6.6.{30 + generation}", "kib": 96 + 16 * generation},
            "linux_6_12": {"version": f"6.12.{8 + generation}", "kib": 104 + 16 * generation},
        },
        "packages": {
            "openssh": {"version": "9.9p2", "kib": 12},
            "htop": {"version": "3.3.0", "kib": 10},
            "git": {"version": "2.47.1", "kib": 40},
            "vim": {"version": "9.1.0", "kib": 30},
            "nginx": {"version": "1.26.2", "kib": 20},
            "coreutils": {"version": "9.5", "kib": 24},
            "nix": {"version": "2.24.11", "kib": 36},
            "ripgrep": {"version": "14.1.1", "kib": 16},
            "fd": {"version": "10.2.0", "kib": 8},
            "bat": {"version": "0.24.0", "kib": 14},
        },
    }


def _flake_lock(package_set: dict[str, object]) -> str:
    """Return a v7 flake.lock whose `nixpkgs` node says which nixpkgs the stand-in stands for.

    The flake has no inputs, so root lists none; nix keeps a node that root does not
    reach and never rewrites this file, and the agent reads the pin's age from it.
    """
    info: dict[str, object] = package_set["nixpkgs"]  # type: ignore[assignment]
    rev = str(info["rev"])
    nar = "sha256-" + base64.b64encode(_digest(rev)).decode()
    nodes = {
        "nixpkgs": {
            "locked": {
                "lastModified": info["lastModified"],
                "narHash": nar,
                "owner": "NixOS",
                "repo": "nixpkgs",
                "rev": rev,
                "type": "github",
            },
            "original": {
                "owner": "NixOS",
                "ref": "nixos-25.05",
                "repo": "nixpkgs",
                "type": "github",
            },
        },
        "root": {},
    }
    return (
        json.dumps({"nodes": nodes, "root": "root", "version": 7}, indent=2, sort_keys=True) + "\n"
    )


def _flake_nix(hosts: Sequence[tuple[str, str]]) -> str:
    def outputs(attr: str, builder: str, kind: str) -> list[str]:
        rows = [
            f'        "{h}" = standin.{builder} "{h}" ./hosts/{h};' for h, k in hosts if k == kind
        ]
        return [f"      {attr} = {{", *rows, "      };"]

    return "\n".join(
        [
            "{",
            '  description = "NixFleet demo fleet (no inputs: standin/ stands in for nixpkgs)";',
            "",
            "  outputs = { self }:",
            "    let",
            f'      standin = import ./standin/lib.nix {{ system = "{_system()}";'
            " inherit self; };",
            "    in",
            "    {",
            *outputs("nixosConfigurations", "nixosSystem", "nixos"),
            *outputs("darwinConfigurations", "darwinSystem", "macos"),
            # A macOS host may be managed by home-manager instead of nix-darwin.
            *outputs("homeConfigurations", "homeManagerConfiguration", "macos"),
            "    };",
            "}",
            "",
        ]
    )


def _nixos_configuration(host: str) -> str:
    return f"""{{ pkgs, ... }}:

{{
  networking.hostName = "{host}";
  time.timeZone = "UTC";

  boot.kernelPackage = pkgs.linux_6_6;
  boot.kernelModules = [ "kvm-intel" ];
  boot.initrd.availableKernelModules = [ "nvme" "xhci_pci" "ahci" "usb_storage" ];

  environment.systemPackages = with pkgs; [ git htop vim ];

  services.sshd = {{ package = pkgs.openssh; args = "-D"; }};

  users.motd = "Welcome to {host}.";

  system.stateVersion = "25.05";
}}
"""


def _darwin_configuration(host: str) -> str:
    return f"""{{ pkgs, ... }}:

{{
  networking.hostName = "{host}";

  environment.systemPackages = with pkgs; [ git htop coreutils ];

  services.nix-daemon = {{ package = pkgs.nix; args = "--daemon"; }};

  # Used when the host is managed by home-manager rather than nix-darwin.
  home.packages = with pkgs; [ ripgrep fd bat ];
  home.file.".config/git/config" = "[user]\\n  name = {host}";

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
        "Demo fleet configuration generated by NixFleet: a flake with no inputs whose\n"
        "`standin/` builds tiny systems laid out like NixOS, nix-darwin and home-manager\n"
        "ones with real Nix, e.g.\n"
        "`nix build .#nixosConfigurations.<host>.config.system.build.toplevel`.\n\n"
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
    breaking: Collection[str] = (),
) -> Path:
    """Return the path of a bare git repo (root / "fleet-config.git") holding a demo flake config.

    hosts: (host_id, os_kind) with os_kind "nixos" or "macos". failing: hosts whose build
    fails (a FAIL_BUILD file); breaking: hosts whose system, once switched to, cuts them off
    the network (a BREAK_NETWORK file: the demo's health-gated rollback).
    The working clone used to author it stays at root / "fleet-config" so that
    commit_change() can add commits later.
    """
    _validate(hosts, [*failing, *breaking], branch)
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
    package_set = _package_set(0, _first_pin())
    _write(work / "README.md", _readme(hosts))
    _write(work / "flake.nix", _flake_nix(hosts))
    _write(work / "flake.lock", _flake_lock(package_set))
    _write(work / PACKAGES, json.dumps(package_set, indent=2) + "\n")
    _write(work / "standin" / "lib.nix", (STANDIN / "lib.nix").read_text(encoding="utf-8"))
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
        if host in breaking:
            _write(
                host_dir / "BREAK_NETWORK",
                f"demo: once switched to, this system cuts {host} off the network (a firewall "
                "that drops outgoing connections); delete this file to fix it\n",
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


def update_nixpkgs(root: Path, message: str = "flake.lock: update nixpkgs") -> str:
    """Return the commit that moves the stand-in's nixpkgs one week on (kernel included)."""
    work = Path(root).absolute() / WORK_NAME
    current = json.loads((work / PACKAGES).read_text(encoding="utf-8"))
    pin = current["nixpkgs"]
    package_set = _package_set(int(pin["generation"]) + 1, int(pin["first"]))
    (work / "flake.lock").write_text(_flake_lock(package_set), encoding="utf-8")
    _git(["add", "--", "flake.lock"], cwd=work)
    return commit_change(root, message, PACKAGES, json.dumps(package_set, indent=2) + "\n")
