"""What a switch to a built system would change: the report of a `plan` command.

1. Packages: `nix store diff-closures CURRENT NEW` (added, removed, version changes, the
   per-package size change) and `nix path-info -S` for the exact closure size delta.
2. Reboot: the new system's kernel, initrd and kernel modules against the booted one's.
3. Services: unit files (NixOS `etc/systemd/system`, nix-darwin `Library/LaunchDaemons`)
   added, removed or changed against the running system, as switch-to-configuration
   decides what to start, stop and restart.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from nixfleet.agent.status import SystemPaths, boot_files
from nixfleet.core.drift import reboot_reason
from nixfleet.core.wire import PackageChange, PlanReport

_NIX = ["nix", "--extra-experimental-features", "nix-command"]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(
    r"^(?P<name>[^:]{1,120}): (?:(?P<before>.*?) → (?P<after>[^,]*))?(?:, )?"
    r"(?:(?P<size>[+-]\d+(?:\.\d+)?) KiB)?$"
)
_UNIT_DIRS = {"nixos": "etc/systemd/system", "macos": "Library/LaunchDaemons"}
_TIMEOUT_S = 120


async def _nix(*args: str) -> str:
    """Return nix's stdout for args, or raise RuntimeError with its first error line."""
    proc = await asyncio.create_subprocess_exec(
        *_NIX, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), _TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"nix {args[0]} took longer than {_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        first = err.decode("utf-8", "replace").strip().splitlines()[:1]
        raise RuntimeError(f"nix {' '.join(args[:2])}: {first[0] if first else 'failed'}")
    return out[: 1 << 20].decode("utf-8", "replace")


def parse_diff_closures(text: str) -> list[PackageChange]:
    """Return the changes `nix store diff-closures` printed (colours stripped; ∅ = none)."""
    changes = []
    for raw in _ANSI.sub("", text).splitlines():
        match = _LINE.match(raw.strip())
        if not match or not (match["before"] is not None or match["size"]):
            continue
        before, after = (
            "" if v in (None, "∅") else v[:120] for v in (match["before"], match["after"])
        )
        size = round(float(match["size"]) * 1024) if match["size"] else 0
        changes.append(
            PackageChange(name=match["name"], before=before, after=after, size_delta=size)
        )
        if len(changes) == 500:
            break
    return changes


def _pname(store_path: str) -> str:
    """Return a store path's package name: "nixos-system-atlas" of …-nixos-system-atlas-25.05."""
    name = Path(store_path).name.partition("-")[2]
    match = re.match(r"(.*?)-\d", name)
    return match.group(1) if match else name


async def _closure_size(path: str) -> int:
    fields = (await _nix("path-info", "-S", path)).split()
    return int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else 0


def _units(system: str, os_kind: str) -> dict[str, bytes]:
    """Return {unit file name: content} of a system (empty where the tool cannot tell)."""
    folder = _UNIT_DIRS.get(os_kind)
    if not system or folder is None:
        return {}
    units = {}
    try:
        for item in sorted((Path(system) / folder).iterdir())[:1000]:
            if item.is_file():
                units[item.name] = item.read_bytes()[: 1 << 16]
    except OSError:
        return {}
    return units


async def preview(paths: SystemPaths, new: str, target_commit: str) -> PlanReport:
    """Return what switching from the running system to the built system `new` would do."""
    current = paths.current()
    changes = []
    if current:
        # The system's own name carries its version: it changes whenever anything does.
        itself = {_pname(current), _pname(new)}
        diff = await _nix("store", "diff-closures", current, new)
        changes = [c for c in parse_diff_closures(diff) if c.name not in itself]
    size_delta = await _closure_size(new) - (await _closure_size(current) if current else 0)
    reboot: bool | None = None
    reason = "not applicable"
    if paths.os_kind == "nixos":
        reason = reboot_reason(boot_files(new), boot_files(paths.booted()))
        reboot = bool(reason)
    old_units, new_units = _units(current, paths.os_kind), _units(new, paths.os_kind)
    if paths.tool == "home-manager":
        old_units = new_units = {}
    return PlanReport(
        target_commit=target_commit,
        system=new,
        base_system=current,
        changed=new != current,
        changes=changes,
        size_delta=size_delta,
        reboot=reboot,
        reboot_reason=reason[:200],
        restart=sorted(n for n in new_units if n in old_units and old_units[n] != new_units[n])[
            :200
        ],
        start=sorted(n for n in new_units if n not in old_units)[:200],
        stop=sorted(n for n in old_units if n not in new_units)[:200],
    )
