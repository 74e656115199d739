"""What the agent reports about its host: what it runs, where that came from, lock, load.

It reads only what it would read on a real host: the system links (current-system,
booted-system), the profile's generation link, the system's own files (kernel, initrd,
kernel-modules, etc/os-release, nixos-version, darwin-version.json), and its own record.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from nixfleet import __version__
from nixfleet.agent.codec import salvage
from nixfleet.agent.deployment import DeployRecord
from nixfleet.core.framing import MAX_GENERATIONS
from nixfleet.core.wire import BootFiles, HostStatus

_GENERATION = re.compile(r"-(\d+)-link$")
_KERNEL = re.compile(r"^/nix/store/[0-9a-z]{32}-linux-(\d[^/]*?)/")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _memory() -> tuple[int, int]:
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return int(info["MemTotal"].split()[0]) * 1024, int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, 0


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def _lock_info(repo_dir: Path) -> tuple[str, int | None]:
    try:
        raw = (repo_dir / "flake.lock").read_bytes()
    except OSError:
        return "", None
    digest = hashlib.sha256(raw).hexdigest()[:16]
    try:
        nodes = json.loads(raw)["nodes"]
        return digest, int(nodes["nixpkgs"]["locked"]["lastModified"])
    except (ValueError, KeyError, TypeError):
        return digest, None


async def git_head(repo_dir: Path, ref: str = "HEAD") -> str:
    """Return the commit ref names in repo_dir, or "" when there is none."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-C",
        str(repo_dir),
        "rev-parse",
        "--verify",
        "--quiet",
        f"{ref}^{{commit}}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return out.decode().strip() if proc.returncode == 0 else ""


def resolve(link: Path) -> str:
    """Return the store path a link points to, or "" when there is no such link."""
    try:
        return str(link.resolve(strict=True)) if link.is_symlink() else ""
    except (OSError, RuntimeError):
        return ""


def _generation(profile: Path) -> int | None:
    """Return the profile's current generation: system -> system-42-link is 42."""
    try:
        match = _GENERATION.search(os.readlink(profile))
    except OSError:
        return None
    return int(match.group(1)) if match else None


async def _generations(
    paths: SystemPaths, record: DeployRecord, revisions: Revisions
) -> list[dict[str, object]]:
    """Return the profile's newest generations, newest first, each with its commit if known.

    The profile's siblings `system-N-link` are the generations (what `nix-env
    --list-generations` reads); a generation's commit is its system's configuration revision,
    else the agent's record of the switch that built it.
    """
    profile = paths.profile
    prefix = profile.name + "-"
    current = _generation(profile)
    found: list[tuple[int, Path]] = []
    try:
        for entry in profile.parent.iterdir():
            match = _GENERATION.search(entry.name)
            if entry.name.startswith(prefix) and match:
                found.append((int(match.group(1)), entry))
    except OSError:
        return []
    result: list[dict[str, object]] = []
    for number, link in sorted(found, reverse=True)[:MAX_GENERATIONS]:
        system = resolve(link)
        try:
            created: float | None = link.lstat().st_mtime
        except OSError:
            created = None
        revision, _ = await revisions.of(system, paths.tool)
        commit = revision or record.commit_for(system)
        result.append(
            dict(
                number=number,
                created=created,
                system=system,
                commit=commit,
                current=number == current,
            )
        )
    return result


def _read(path: str | Path, limit: int = 65536) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def boot_files(system: str) -> BootFiles | None:
    """Return what NixOS compares for "reboot needed": kernel, initrd, kernel modules."""
    if not system:
        return None
    root = Path(system)
    return BootFiles(
        kernel=resolve(root / "kernel"),
        initrd=resolve(root / "initrd"),
        kernel_modules=resolve(root / "kernel-modules"),
    )


def _os_release(system: str) -> dict[str, str]:
    text = _read(Path(system) / "etc/os-release") if system else ""
    text = text or _read("/etc/os-release")
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k: v.strip().strip('"') for k, v in pairs}


def _macos_version(version_file: Path) -> str:
    # Imported here: plistlib brings the XML parser (0.3 MiB), which only macOS hosts use.
    import plistlib

    try:
        with version_file.open("rb") as fh:
            return str(plistlib.load(fh).get("ProductVersion", ""))[:40]
    except (OSError, ValueError):  # plistlib.InvalidFileException is a ValueError
        return platform.mac_ver()[0]


@dataclass(frozen=True)
class SystemPaths:
    """Where the agent reads its host's systems (settable so tests use a host's own).

    On NixOS: /run/current-system, /run/booted-system, /nix/var/nix/profiles/system. On
    nix-darwin: the same without booted-system. With home-manager: its profile only.
    """

    os_kind: str
    tool: str
    system_dir: Path = Path("/run")
    profile: Path = Path("/nix/var/nix/profiles/system")
    macos_version_file: Path = Path("/System/Library/CoreServices/SystemVersion.plist")

    def current(self) -> str:
        if self.tool == "home-manager":
            return resolve(self.profile)
        return resolve(self.system_dir / "current-system")

    def booted(self) -> str:
        return resolve(self.system_dir / "booted-system") if self.os_kind == "nixos" else ""


class Revisions:
    """The configuration revision each system says it was built from, read once per path.

    Store paths never change, so a path read once is known for good; NixOS tells it
    through the system's `nixos-version --json`, nix-darwin in `darwin-version.json`.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, str]] = {}

    async def of(self, system: str, tool: str) -> tuple[str, str]:
        """Return (configuration revision or "", version label) of system."""
        if not system:
            return "", ""
        if system not in self._known:
            if len(self._known) > 32:
                self._known.clear()
            self._known[system] = await self._read(Path(system), tool)
        return self._known[system]

    async def _read(self, root: Path, tool: str) -> tuple[str, str]:
        if tool == "darwin-rebuild":
            info = _json(_read(root / "darwin-version.json"))
            return _revision(info), str(info.get("darwinLabel", ""))[:80]
        if tool == "home-manager":
            return "", _read(root / "hm-version", 80).strip()
        info = _json(await _run([str(root / "sw/bin/nixos-version"), "--json"]))
        label = str(info.get("nixosVersion", "")) or _read(root / "nixos-version", 80).strip()
        return _revision(info), label[:80]


def _json(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _revision(info: dict[str, object]) -> str:
    rev = str(info.get("configurationRevision", ""))
    return rev if _COMMIT.fullmatch(rev) else ""


async def _run(argv: list[str]) -> str:
    """Return a small program's stdout, or "" when it fails or takes longer than 5 s."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
    except OSError:
        return ""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return ""
    return out[:65536].decode("utf-8", "replace") if proc.returncode == 0 else ""


def _kernel_version(boot: BootFiles | None) -> str:
    match = _KERNEL.search(boot.kernel) if boot else None
    return match.group(1)[:64] if match else ""


async def collect(
    paths: SystemPaths, repo_dir: Path, record: DeployRecord, revisions: Revisions
) -> HostStatus:
    """Return a fresh HostStatus; cheap enough to call on every heartbeat.

    A value out of the protocol's bounds (an odd flake.lock, a huge os-release field) is
    left out rather than failing every heartbeat.
    """
    current, booted = paths.current(), paths.booted()
    revision, label = await revisions.of(current, paths.tool)
    deployed = revision or record.commit_for(current)
    current_boot = boot_files(current) if paths.os_kind == "nixos" else None
    if paths.os_kind == "macos":
        os_version = _macos_version(paths.macos_version_file)
    else:
        os_version = _os_release(current).get("VERSION_ID", "") or platform.release()
    lock_hash, lock_modified = _lock_info(repo_dir)
    mem_total, mem_avail = _memory()
    report = dict(
        hostname=socket.gethostname(),
        os_kind="macos" if paths.os_kind == "macos" else "nixos",
        os_version=os_version,
        nixpkgs_version=label,
        generation=_generation(paths.profile),
        current_system=current,
        booted_system=booted,
        current_boot=current_boot,
        booted_boot=boot_files(booted) if paths.os_kind == "nixos" else None,
        kernel=_kernel_version(current_boot),
        deployed_commit=deployed,
        deployed_from="system" if revision else ("agent" if deployed else ""),
        has_deployed=record.has_deployed,
        last_deploy=record.last,
        generations=await _generations(paths, record, revisions),
        agent_version=__version__,
        commit=await git_head(repo_dir),
        lock_hash=lock_hash,
        lock_modified=lock_modified,
        uptime_s=round(_uptime(), 1),
        load1=round(os.getloadavg()[0], 2),
        mem_total=mem_total,
        mem_available=mem_avail,
    )
    return salvage(HostStatus, report)
    return salvage(HostStatus, report)
