"""How each command kind becomes argv lists on NixOS and on macOS.

Commands run as argv lists, never through a shell: host ids and branch names are data,
not shell text. An Executor only plans; the detached runner executes.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nixfleet.core.commands import CommandKind

Step = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """What a plan acts on: this host, its clone of the config repo and the branch."""

    host_id: str
    repo_dir: Path
    branch: str


class Executor(Protocol):
    os_kind: str

    def switch_argv(self, target: Target) -> list[str]: ...

    def launcher(self, command_id: str) -> list[str]: ...


def _pull_steps(t: Target) -> list[Step]:
    git = ["git", "-C", str(t.repo_dir)]
    return [
        {"name": "fetch", "argv": [*git, "fetch", "--prune", "origin", t.branch]},
        {"name": "reset", "argv": [*git, "reset", "--hard", f"origin/{t.branch}"]},
        # Untracked files in our own clone would leak into the flake: remove them.
        {"name": "clean", "argv": [*git, "clean", "-fdx"]},
    ]


def _test_steps(t: Target) -> list[Step]:
    tests = sorted((t.repo_dir / "hosts" / t.host_id / "tests").glob("T*.sh"))
    return [
        {"name": p.name, "argv": [str(p)], "cwd": str(t.repo_dir), "report": True} for p in tests
    ]


def plan(
    executor: Executor, kind: CommandKind, t: Target, now: float, kill_after_s: float
) -> dict[str, Any]:
    """Return the runner's plan for kind: ordered steps, the hard deadline, keep_going."""
    switch = {"name": "switch", "argv": executor.switch_argv(t), "cwd": str(t.repo_dir)}
    steps: list[Step] = {
        CommandKind.PULL: _pull_steps(t),
        CommandKind.SWITCH: [switch],
        CommandKind.PULL_SWITCH: [*_pull_steps(t), switch],
        CommandKind.TEST: _test_steps(t),
    }[kind]
    return {
        "steps": steps,
        "deadline": now + kill_after_s,
        "keep_going": kind == CommandKind.TEST,
    }


class NixOSExecutor:
    os_kind = "nixos"

    def __init__(self, use_systemd_run: bool) -> None:
        self.use_systemd_run = use_systemd_run

    def switch_argv(self, target: Target) -> list[str]:
        return ["nixos-rebuild", "switch", "--flake", f"{target.repo_dir}#{target.host_id}"]

    def launcher(self, command_id: str) -> list[str]:
        # The switch may restart nixfleet-agent.service, and systemd then kills its whole
        # cgroup; a transient unit of its own keeps the build alive.
        if self.use_systemd_run:
            return [
                "systemd-run",
                f"--unit=nixfleet-cmd-{command_id}",
                "--collect",
                "--quiet",
                "--service-type=exec",
                "--",
            ]
        return []


class MacOSExecutor:
    os_kind = "macos"

    def __init__(self, tool: str) -> None:
        self.tool = tool  # "darwin-rebuild" or "home-manager"

    def switch_argv(self, target: Target) -> list[str]:
        return [self.tool, "switch", "--flake", f"{target.repo_dir}#{target.host_id}"]

    def launcher(self, command_id: str) -> list[str]:
        # launchd kills the agent's job on reload but not a process in its own session.
        return []


def make_executor(os_kind: str, macos_tool: str, systemd_run: str) -> Executor:
    """Return the executor for this host; systemd_run is "auto", "yes" or "no"."""
    if os_kind == "macos":
        return MacOSExecutor(macos_tool)
    use = systemd_run == "yes" or (
        systemd_run == "auto"
        and shutil.which("systemd-run") is not None
        and Path("/run/systemd/system").is_dir()
    )
    return NixOSExecutor(use)


def runner_argv(journal_dir: Path) -> list[str]:
    """Return the argv that starts the detached runner on journal_dir."""
    # Run by path with -I -S: the runner needs only the stdlib, and skipping site-packages
    # and the package import saves about a third of its start-up (it is on the click path).
    return [
        sys.executable,
        "-I",
        "-S",
        str(Path(__file__).with_name("detach.py")),
        str(journal_dir),
    ]
