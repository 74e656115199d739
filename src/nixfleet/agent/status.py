"""What the agent reports about its host: OS, generation, config commit, lock, load."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import re
import socket
from pathlib import Path

from nixfleet import __version__
from nixfleet.core.protocol import HostStatus, salvage

_SYSTEM_VERSION = re.compile(r"-(\d{2}\.\d{2}[^-/]*)$")


def _link_or_text(path: Path) -> str:
    """Return where a symlink points, or a file's first line (the demo writes files)."""
    try:
        if path.is_symlink():
            return os.readlink(path)
        return path.read_text().strip()
    except OSError:
        return ""


def _generation(system_dir: Path) -> int | None:
    text = _link_or_text(system_dir / "generation")
    if not text:  # NixOS: /nix/var/nix/profiles/system -> system-42-link
        text = _link_or_text(Path("/nix/var/nix/profiles/system"))
    match = re.search(r"(\d+)", text)
    return int(match.group(1)) if match else None


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


async def _git_head(repo_dir: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-C",
        str(repo_dir),
        "rev-parse",
        "HEAD",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return out.decode().strip() if proc.returncode == 0 else ""


def _os_version(os_kind: str) -> str:
    if os_kind == "macos":
        return platform.mac_ver()[0] or platform.release()
    try:
        release = dict(
            line.split("=", 1)
            for line in Path("/etc/os-release").read_text().splitlines()
            if "=" in line
        )
        return release.get("VERSION_ID", "").strip('"')
    except OSError:
        return platform.release()


async def collect(os_kind: str, repo_dir: Path, system_dir: Path) -> HostStatus:
    """Return a fresh HostStatus; cheap enough to call on every heartbeat.

    A value out of the protocol's bounds (an odd flake.lock, a huge os-release field) is
    left out rather than failing every heartbeat.
    """
    current = _link_or_text(system_dir / "current-system")
    booted = _link_or_text(system_dir / "booted-system")
    lock_hash, lock_modified = _lock_info(repo_dir)
    mem_total, mem_avail = _memory()
    match = _SYSTEM_VERSION.search(current)
    report = dict(
        hostname=socket.gethostname(),
        os_kind="macos" if os_kind == "macos" else "nixos",
        os_version=_os_version(os_kind),
        nixpkgs_version=match.group(1) if match else "",
        generation=_generation(system_dir),
        current_system=current,
        booted_system=booted,
        agent_version=__version__,
        commit=await _git_head(repo_dir),
        lock_hash=lock_hash,
        lock_modified=lock_modified,
        uptime_s=round(_uptime(), 1),
        load1=round(os.getloadavg()[0], 2),
        mem_total=mem_total,
        mem_available=mem_avail,
    )
    return salvage(HostStatus, report)
