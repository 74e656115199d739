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

import msgspec

from nixfleet.core.commands import GATED, CommandKind
from nixfleet.core.wire import Check, HealthGate, HttpCheck, TcpCheck, TestsCheck, UnitCheck

Step = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """What a plan acts on: this host, its clone of the config repo and the branch.

    work_dir holds what `plan` commands build (STATE_DIR/plans/<command id>/result, a
    garbage-collector root, so a later switch of the same target finds it built).
    """

    host_id: str
    repo_dir: Path
    branch: str
    work_dir: Path = Path("/var/lib/nixfleet-agent/plans")
    # The profile whose generations a rollback moves between (system or home-manager).
    profile: Path = Path("/nix/var/nix/profiles/system")

    def flake(self) -> str:
        return f"{self.repo_dir}#{self.host_id}"

    def fetched_flake(self) -> str:
        """Return the flake of the branch as last fetched, without checking it out."""
        ref = f"refs/remotes/origin/{self.branch}"
        return f"git+file://{self.repo_dir.absolute()}?ref={ref}#{self.host_id}"


class Executor(Protocol):
    os_kind: str
    tool: str

    def tool_argv(self, action: str, flake: str) -> list[str]: ...

    def rollback_argv(self) -> list[str]: ...

    def generation_steps(self, generation: int, profile: Path) -> list[Step]: ...
    def activate_argvs(self, profile: Path) -> list[list[str]]: ...

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


def _preview_steps(executor: Executor, t: Target, command_id: str) -> list[Step]:
    """Fetch the branch and build its head into the plan's own directory (./result)."""
    git = ["git", "-C", str(t.repo_dir)]
    out = t.work_dir / command_id
    return [
        {"name": "fetch", "argv": [*git, "fetch", "--prune", "origin", t.branch]},
        {"name": "build", "argv": executor.tool_argv("build", t.fetched_flake()), "cwd": str(out)},
    ]


def check_label(check: Check) -> str:
    """Return the name a check goes by in output and reasons: its own, or what it checks."""
    if check.name:
        return check.name
    if isinstance(check, UnitCheck):
        return check.unit
    if isinstance(check, TcpCheck):
        return f"{check.host}:{check.port}"
    if isinstance(check, HttpCheck):
        return check.url[:80]
    return "tests"


def gate_plan(
    executor: Executor, t: Target, gate: HealthGate, systemctl: list[str], profile: Path
) -> dict[str, Any]:
    """Return the runner's form of a health gate: its checks as probes, the rollback step,
    and the profile whose generation the switch moves.

    A unit check runs `<systemctl> is-active --quiet UNIT`; systemctl is the agent's
    option, so a host without systemd (the demo, the tests) names its stand-in.
    """
    checks: list[Step] = []
    for check in gate.checks:
        fields = msgspec.to_builtins(check)  # with its kind, the tag
        probe: Step = {
            "label": check_label(check),
            **{k: v for k, v in fields.items() if k != "name"},
        }
        if isinstance(check, TestsCheck):
            probe |= {
                "dir": str(t.repo_dir / "hosts" / t.host_id / "tests"),
                "cwd": str(t.repo_dir),
            }
        elif isinstance(check, UnitCheck):
            probe = {"label": probe["label"], "kind": "command"}
            probe["argv"] = [*systemctl, "is-active", "--quiet", check.unit]
        checks.append(probe)
    return {
        "deadline_s": gate.deadline_s,
        "confirm": gate.confirm,
        "checks": checks,
        "rollback": _gate_rollback(executor, t, profile),
        "profile": str(profile),
        "generation_before": _link(profile),
    }


def _gate_rollback(executor: Executor, t: Target, profile: Path) -> list[Step]:
    """Return the steps that bring back the generation current now, before the switch.

    Not `--rollback`: that goes to the next lower number, which after an earlier rollback
    is the very generation that was rolled back from. The profile is set to the number it
    has now (`nix-env --switch-generation`, what `nixos-rebuild --rollback` does inside)
    and that system is activated as its tool does.
    """
    cwd = str(t.repo_dir)
    number = _link(profile).removesuffix("-link").rpartition("-")[2]
    if not number.isdigit():  # no profile yet, or not a generation link: the tool decides
        return [{"name": "rollback", "argv": executor.rollback_argv(), "cwd": cwd}]
    switch = ["nix-env", "-p", str(profile), "--switch-generation", number]
    activate = executor.activate_argvs(profile)
    return [
        {"name": "rollback", "argv": switch, "cwd": cwd},
        *({"name": "activate", "argv": argv, "cwd": cwd} for argv in activate),
    ]


def _link(profile: Path) -> str:
    """Return the generation link a profile points at, e.g. system-42-link ("" if none)."""
    try:
        return profile.readlink().name
    except OSError:
        return ""


def plan(
    executor: Executor,
    kind: CommandKind,
    t: Target,
    now: float,
    kill_after_s: float,
    command_id: str = "",
    gate: dict[str, Any] | None = None,
    generation: int | None = None,
) -> dict[str, Any]:
    """Return the runner's plan for kind: ordered steps, the hard deadline, keep_going,
    and for a switch its health gate (`gate_plan`), if it has one. A rollback with a
    generation goes to that one, else to the previous."""
    switch = {
        "name": "switch",
        "argv": executor.tool_argv("switch", t.flake()),
        "cwd": str(t.repo_dir),
    }
    rollback = {
        "name": "rollback",
        "argv": executor.rollback_argv(),
        "cwd": str(t.repo_dir),
    }
    back = [rollback] if generation is None else executor.generation_steps(generation, t.profile)
    steps: list[Step] = {
        CommandKind.ROLLBACK: back,
        CommandKind.PULL: _pull_steps(t),
        CommandKind.SWITCH: [switch],
        CommandKind.PULL_SWITCH: [*_pull_steps(t), switch],
        CommandKind.TEST: _test_steps(t),
        CommandKind.PLAN: _preview_steps(executor, t, command_id),
    }[kind]
    return {
        "steps": steps,
        "deadline": now + kill_after_s,
        "keep_going": kind == CommandKind.TEST,
        "gate": gate if kind in GATED else None,
    }


class NixOSExecutor:
    os_kind = "nixos"
    tool = "nixos-rebuild"

    def __init__(self, use_systemd_run: bool) -> None:
        self.use_systemd_run = use_systemd_run

    def tool_argv(self, action: str, flake: str) -> list[str]:
        return ["nixos-rebuild", action, "--flake", flake]

    def rollback_argv(self) -> list[str]:
        return ["nixos-rebuild", "switch", "--rollback"]

    def generation_steps(self, generation: int, profile: Path) -> list[Step]:
        # nixos-rebuild has --rollback only; a chosen generation is the profile's own move
        # (what --rollback does for the previous one), then that system's activation.
        return [
            _switch_generation(profile, generation),
            {"name": "activate", "argv": [str(profile / "bin/switch-to-configuration"), "switch"]},
        ]

    def activate_argvs(self, profile: Path) -> list[list[str]]:
        return [[str(profile / "bin" / "switch-to-configuration"), "switch"]]

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

    def tool_argv(self, action: str, flake: str) -> list[str]:
        return [self.tool, action, "--flake", flake]

    def rollback_argv(self) -> list[str]:
        # darwin-rebuild has --rollback; home-manager has no such flag (its way is the
        # previous generation's `activate`), which the demo's shim accepts alike.
        return [self.tool, "switch", "--rollback"]

    def generation_steps(self, generation: int, profile: Path) -> list[Step]:
        if self.tool == "darwin-rebuild":
            argv = ["darwin-rebuild", "switch", "--switch-generation", str(generation)]
            return [{"name": "rollback", "argv": argv}]
        # home-manager: a generation is activated by running its own `activate`.
        return [
            _switch_generation(profile, generation),
            {"name": "activate", "argv": [str(profile / "activate")]},
        ]

    def activate_argvs(self, profile: Path) -> list[list[str]]:
        if self.tool == "home-manager":
            return [[str(profile / "activate")]]
        return [[str(profile / "activate-user")], [str(profile / "activate")]]

    def launcher(self, command_id: str) -> list[str]:
        # launchd kills the agent's job on reload but not a process in its own session.
        return []


def _switch_generation(profile: Path, generation: int) -> Step:
    argv = ["nix-env", "-p", str(profile), "--switch-generation", str(generation)]
    return {"name": "switch-generation", "argv": argv}


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
