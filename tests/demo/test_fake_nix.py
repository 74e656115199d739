"""Fake nixos-rebuild / darwin-rebuild / home-manager scripts and the demo config repo.

Everything runs for real: git repositories in tmp_path and the bash scripts as
subprocesses, exactly as the agent will run them.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import nixfleet.demo
from nixfleet.demo.configrepo import commit_change, create_config_repo

FAKEBIN = Path(nixfleet.demo.__file__).parent / "fakebin"
HOSTS = [("web-01", "nixos"), ("mac-01", "macos"), ("broken", "nixos")]
STORE_PATH_RE = r"/nix/store/[0123456789abcdfghijklmnpqrsvwxyz]{32}-"

ACTIVATION_LINES = {
    "nixos-rebuild": [
        "building the system configuration...",
        "activating the configuration...",
        "setting up /etc...",
        "reloading user units for root...",
        "restarting sysinit-reactivation.target",
    ],
    "darwin-rebuild": [
        "building the system configuration...",
        "setting up /etc...",
        "setting up launchd services...",
    ],
    "home-manager": [
        "Starting Home Manager activation",
        "Activating home-manager configuration",
        "Creating profile generation",
    ],
}
SYSTEM_PREFIX = {
    "nixos-rebuild": "nixos-system",
    "darwin-rebuild": "darwin-system",
    "home-manager": "home-manager-generation",
}
HOST_FOR = {"nixos-rebuild": "web-01", "darwin-rebuild": "mac-01", "home-manager": "web-01"}


@dataclass
class Fleet:
    root: Path
    bare: Path
    checkout: Path


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def fake_env(state: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIXFLEET_FAKE_")}
    env["NIXFLEET_FAKE_DURATION"] = "0"
    if state is not None:
        env["NIXFLEET_FAKE_STATE_DIR"] = str(state)
    env.update(extra)
    return env


def run_fake(
    script: str, *args: str, state: Path | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAKEBIN / script), *args],
        env=fake_env(state, **extra),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def read_state(state: Path, name: str) -> str:
    return (state / name).read_text().strip()


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    root = tmp_path / "demo"
    bare = create_config_repo(root, HOSTS, failing=["broken"])
    checkout = tmp_path / "checkout"
    git("clone", "--quiet", str(bare), str(checkout))
    return Fleet(root=root, bare=bare, checkout=checkout)


def test_config_repo_layout(fleet: Fleet) -> None:
    assert fleet.bare == fleet.root / "fleet-config.git"
    assert (fleet.root / "fleet-config" / ".git").is_dir()
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=fleet.checkout) == "main"

    flake = (fleet.checkout / "flake.nix").read_text()
    assert '"web-01" = nixpkgs.lib.nixosSystem' in flake
    assert '"mac-01" = nix-darwin.lib.darwinSystem' in flake

    lock = json.loads((fleet.checkout / "flake.lock").read_text())
    assert lock["version"] == 7
    assert lock["root"] == "root"
    assert lock["nodes"]["root"]["inputs"]["nixpkgs"] == "nixpkgs"
    locked = lock["nodes"]["nixpkgs"]["locked"]
    assert locked["type"] == "github"
    assert (locked["owner"], locked["repo"]) == ("NixOS", "nixpkgs")
    assert re.fullmatch(r"[0-9a-f]{40}", locked["rev"])
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked["narHash"])
    assert isinstance(locked["lastModified"], int)

    for host, _ in HOSTS:
        assert (fleet.checkout / "hosts" / host / "configuration.nix").is_file()
    assert (fleet.checkout / "hosts" / "broken" / "FAIL_BUILD").is_file()
    assert not (fleet.checkout / "hosts" / "web-01" / "FAIL_BUILD").exists()


@pytest.mark.parametrize("host", ["web-01", "mac-01", "broken"])
def test_host_test_scripts(fleet: Fleet, host: str) -> None:
    tests_dir = fleet.checkout / "hosts" / host / "tests"
    for name in ("T01-ssh.sh", "T02-disk.sh", "T03-services.sh"):
        script = tests_dir / name
        assert os.access(script, os.X_OK), f"{script} lost its exec bit through git"
        started = time.monotonic()
        proc = subprocess.run([str(script)], capture_output=True, text=True, check=False)
        assert time.monotonic() - started < 0.5
        assert proc.stdout.strip()
        expected = 1 if (host == "broken" and name == "T03-services.sh") else 0
        assert proc.returncode == expected, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", ["nixos-rebuild", "darwin-rebuild", "home-manager"])
def test_switch_bumps_generation_and_keeps_booted(
    fleet: Fleet, tmp_path: Path, script: str
) -> None:
    host = HOST_FOR[script]
    state = tmp_path / "state"
    flake = f"{fleet.checkout}#{host}"

    first = run_fake(script, "switch", "--flake", flake, state=state)
    assert first.returncode == 0, first.stderr
    for line in ACTIVATION_LINES[script]:
        assert line in first.stdout
    assert "derivations will be built:" in first.stderr
    assert re.search(rf"^  {STORE_PATH_RE}\S+\.drv$", first.stderr, re.MULTILINE)

    short = git("rev-parse", "--short=7", "HEAD", cwd=fleet.checkout)
    current = read_state(state, "current-system")
    assert re.fullmatch(
        rf"{STORE_PATH_RE}{SYSTEM_PREFIX[script]}-{host}-25\.05\.20250101\.{short}", current
    )
    assert read_state(state, "generation") == "1"
    assert read_state(state, "booted-system") == current
    assert not [p for p in state.iterdir() if p.name.startswith(".")], "temp files left"

    # A new config revision must give a new system path that differs from booted.
    commit_change(fleet.root, "bump")
    git("pull", "--quiet", "--ff-only", cwd=fleet.checkout)
    second = run_fake(script, "switch", "--flake", flake, state=state)
    assert second.returncode == 0, second.stderr
    assert read_state(state, "generation") == "2"
    assert read_state(state, "booted-system") == current
    new_current = read_state(state, "current-system")
    assert new_current != current
    assert new_current.endswith(git("rev-parse", "--short=7", "HEAD", cwd=fleet.checkout))


def test_build_does_not_touch_state(fleet: Fleet, tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = run_fake("nixos-rebuild", "build", "--flake", f"{fleet.checkout}#web-01", state=state)
    assert proc.returncode == 0, proc.stderr
    assert "activating the configuration..." not in proc.stdout
    assert re.search(rf"^{STORE_PATH_RE}nixos-system-web-01-", proc.stdout, re.MULTILINE)
    assert not state.exists()


def test_switch_without_state_dir_and_outside_git(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "hosts" / "web-01").mkdir(parents=True)
    proc = run_fake("nixos-rebuild", "switch", "--flake", f"{plain}#web-01", state=None)
    assert proc.returncode == 0, proc.stderr

    state = tmp_path / "state"
    # Stops git from finding an enclosing repository above tmp_path.
    proc = run_fake(
        "nixos-rebuild",
        "switch",
        "--flake",
        f"{plain}#web-01",
        state=state,
        GIT_CEILING_DIRECTORIES=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert read_state(state, "current-system").endswith("-web-01-25.05.20250101.dirty")


@pytest.mark.parametrize("script", ["nixos-rebuild", "darwin-rebuild", "home-manager"])
def test_fail_build_marker(fleet: Fleet, tmp_path: Path, script: str) -> None:
    state = tmp_path / "state"
    proc = run_fake(script, "switch", "--flake", f"{fleet.checkout}#broken", state=state)
    assert proc.returncode == 1
    assert re.search(
        rf"^error: builder for '{STORE_PATH_RE}broken-system\.drv' failed with exit code 1;$",
        proc.stderr,
        re.MULTILINE,
    )
    assert "last 10 log lines:" in proc.stderr
    assert "activating the configuration..." not in proc.stdout
    assert not (state / "generation").exists()


def test_fake_fail_with_custom_exit(fleet: Fleet, tmp_path: Path) -> None:
    state = tmp_path / "state"
    flake = f"{fleet.checkout}#web-01"
    proc = run_fake(
        "nixos-rebuild",
        "switch",
        "--flake",
        flake,
        state=state,
        NIXFLEET_FAKE_FAIL="1",
        NIXFLEET_FAKE_EXIT="7",
    )
    assert proc.returncode == 7
    assert "error: builder for '" in proc.stderr
    assert not (state / "generation").exists()

    plain_fail = run_fake("nixos-rebuild", "switch", "--flake", flake, NIXFLEET_FAKE_FAIL="1")
    assert plain_fail.returncode == 1


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["switch"],
        ["boot", "--flake", "{co}#web-01"],
        ["switch", "--flake", "{co}"],
        ["switch", "--flake", "{co}#"],
        ["switch", "--flake", "#web-01"],
        ["switch", "--flake"],
        ["switch", "--no-such-flag", "--flake", "{co}#web-01"],
        ["switch", "extra", "--flake", "{co}#web-01"],
    ],
)
@pytest.mark.parametrize("script", ["nixos-rebuild", "darwin-rebuild", "home-manager"])
def test_bad_arguments_exit_2(fleet: Fleet, script: str, args: list[str]) -> None:
    argv = [a.format(co=fleet.checkout) for a in args]
    proc = run_fake(script, *argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip()


def test_flake_url_spellings_accepted(fleet: Fleet) -> None:
    for ref in (f"path:{fleet.checkout}#web-01", f"git+file://{fleet.checkout}#web-01"):
        proc = run_fake("nixos-rebuild", "switch", f"--flake={ref}")
        assert proc.returncode == 0, proc.stderr


def test_duration_spreads_output(fleet: Fleet) -> None:
    started = time.monotonic()
    proc = run_fake(
        "nixos-rebuild",
        "build",
        "--flake",
        f"{fleet.checkout}#web-01",
        NIXFLEET_FAKE_DURATION="0.6",
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert 0.5 <= elapsed < 5


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces; fields resume after its closing ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def long_switch(fleet: Fleet, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [str(FAKEBIN / "nixos-rebuild"), "switch", "--flake", f"{fleet.checkout}#web-01"],
        # ~9 s per line: a leaked sleep would still be alive when the test looks.
        env=fake_env(state, NIXFLEET_FAKE_DURATION="300"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, state
    finally:
        if proc.poll() is None:
            proc.kill()
        # Not communicate(): a leaked child would hold the pipes open for seconds.
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait(timeout=10)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_interrupts_and_leaves_no_child(
    long_switch: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, state = long_switch
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=10), "no output from the fake command"
    assert proc.stdout.readline().strip() == "building the system configuration..."

    deadline = time.monotonic() + 5
    children = _children(proc.pid)
    while not children and time.monotonic() < deadline:
        time.sleep(0.02)
        children = _children(proc.pid)
    assert children, "the fake command should be waiting on a child process"

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 130
    assert time.monotonic() - started < 2, "SIGTERM must not wait for the current sleep"

    deadline = time.monotonic() + 1
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(c) for c in children), "child process left behind"

    assert proc.stderr is not None
    assert "error: interrupted by the user" in proc.stderr.read()
    assert not (state / "generation").exists()


def test_commit_change_visible_on_bare_repo(fleet: Fleet) -> None:
    before = git("ls-remote", str(fleet.bare), "refs/heads/main").split()[0]
    new = commit_change(fleet.root, "Tune sshd", "hosts/web-01/extra.nix", "{ }\n")
    assert re.fullmatch(r"[0-9a-f]{40}", new)
    assert new != before
    assert git("ls-remote", str(fleet.bare), "refs/heads/main").split()[0] == new

    again = commit_change(fleet.root, "Same content again", "hosts/web-01/extra.nix", "{ }\n")
    assert again != new
    appended = commit_change(fleet.root, "note")
    assert git("ls-remote", str(fleet.bare), "refs/heads/main").split()[0] == appended
    assert (fleet.root / "fleet-config" / "README.md").read_text().endswith("note\n")

    with pytest.raises(ValueError):
        commit_change(fleet.root, "escape", "../outside.txt", "x")


def test_custom_branch(tmp_path: Path) -> None:
    bare = create_config_repo(tmp_path, [("solo", "nixos")], branch="trunk")
    assert git("symbolic-ref", "HEAD", cwd=bare) == "refs/heads/trunk"
    new = commit_change(tmp_path, "on trunk")
    assert git("ls-remote", str(bare), "refs/heads/trunk").split()[0] == new


def test_invalid_arguments_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        create_config_repo(tmp_path / "a", [("h", "windows")])
    with pytest.raises(ValueError):
        create_config_repo(tmp_path / "b", [("h", "nixos")], failing=["other"])
    with pytest.raises(ValueError):
        create_config_repo(tmp_path / "c", [("../evil", "nixos")])
    create_config_repo(tmp_path / "d", [("h", "nixos")])
    with pytest.raises(FileExistsError):
        create_config_repo(tmp_path / "d", [("h", "nixos")])


@pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="nix-instantiate not found")
@pytest.mark.parametrize(
    "hosts",
    [HOSTS, [("only-linux", "nixos")], [("only-mac", "macos")]],
    ids=["mixed", "nixos-only", "macos-only"],
)
def test_nix_files_parse(tmp_path: Path, hosts: list[tuple[str, str]]) -> None:
    create_config_repo(tmp_path, hosts)
    nix_files = sorted((tmp_path / "fleet-config").rglob("*.nix"))
    assert len(nix_files) == len(hosts) + 1
    for path in nix_files:
        proc = subprocess.run(
            ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, f"{path}: {proc.stderr}"
