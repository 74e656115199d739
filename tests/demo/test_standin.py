"""The demo's config repo is a real flake, and the stand-in rebuild tools are shims over real
Nix: real builds into the store, real profile generations, real links. Everything runs as
the agent runs it (the scripts as subprocesses, git repositories in tmp_path)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import nixfleet.demo
from nixfleet.demo.configrepo import commit_change, create_config_repo, update_nixpkgs

FAKEBIN = Path(nixfleet.demo.__file__).parent / "fakebin"
HOSTS = [("web-01", "nixos"), ("mac-01", "macos"), ("broken", "nixos")]
STORE = re.compile(r"^/nix/store/[0-9a-z]{32}-")


@dataclass
class Fleet:
    root: Path
    bare: Path
    checkout: Path
    system: Path  # the simulated host's profiles/, current-system, booted-system

    def flake(self, host: str = "web-01") -> str:
        return f"{self.checkout}#{host}"


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def run_tool(
    fleet: Fleet, tool: str, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAKEBIN / tool), *args],
        env={**os.environ, "NIXFLEET_DEMO_SYSTEM_DIR": str(fleet.system), **env},
        cwd=cwd or fleet.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def generations(profile: Path) -> list[int]:
    return sorted(
        int(m.group(1))
        for p in profile.parent.iterdir()
        if (m := re.fullmatch(rf"{profile.name}-(\d+)-link", p.name))
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    root = tmp_path / "demo"
    bare = create_config_repo(root, HOSTS, failing=["broken"])
    checkout = tmp_path / "checkout"
    git("clone", "--quiet", str(bare), str(checkout))
    return Fleet(root=root, bare=bare, checkout=checkout, system=tmp_path / "system")


def test_the_config_repo_is_a_flake_without_inputs_whose_lock_nix_leaves_alone(fleet):
    flake = (fleet.checkout / "flake.nix").read_text()
    assert "inputs =" not in flake and "outputs = { self }:" in flake
    assert '"web-01" = standin.nixosSystem "web-01" ./hosts/web-01;' in flake
    assert '"mac-01" = standin.darwinSystem "mac-01" ./hosts/mac-01;' in flake
    lock = json.loads((fleet.checkout / "flake.lock").read_text())
    assert lock["nodes"]["root"] == {} and lock["version"] == 7
    age_days = (time.time() - lock["nodes"]["nixpkgs"]["locked"]["lastModified"]) / 86400
    assert 21 <= age_days < 22  # a believable pin: three weeks old
    proc = run_tool(fleet, "nixos-rebuild", "build", "--flake", fleet.flake(), cwd=fleet.checkout)
    assert proc.returncode == 0, proc.stderr
    assert git("status", "--porcelain", cwd=fleet.checkout) == "?? result"  # lock untouched


def test_a_switch_builds_for_real_and_makes_a_new_generation(fleet):
    proc = run_tool(fleet, "nixos-rebuild", "switch", "--flake", fleet.flake())
    assert proc.returncode == 0, proc.stderr
    assert "building the system configuration..." in proc.stderr
    assert "starting the following units: sshd.service" in proc.stdout
    profile = fleet.system / "profiles" / "system"
    assert generations(profile) == [1]
    current = (fleet.system / "current-system").resolve()
    assert current == profile.resolve()
    assert STORE.match(str(current)) and current.name[33:].startswith("nixos-system-web-01-25.05.")
    for name in ("kernel", "initrd", "kernel-modules", "etc", "activate", "nixos-version"):
        assert (current / name).exists(), name
    assert (current / "kernel").resolve().parent.name.endswith("-linux-6.6.30")
    info = json.loads(subprocess.check_output([current / "sw/bin/nixos-version", "--json"]))
    assert info["configurationRevision"] == git("rev-parse", "HEAD", cwd=fleet.checkout)
    assert 'VERSION_ID="25.05"' in (current / "etc/os-release").read_text()

    # A configuration change: a new generation, the changed unit restarted.
    path = fleet.root / "fleet-config" / "hosts/web-01/configuration.nix"
    text = path.read_text().replace('args = "-D";', 'args = "-D -e";')
    commit_change(fleet.root, "sshd logs to stderr", "hosts/web-01/configuration.nix", text)
    git("pull", "--quiet", cwd=fleet.checkout)
    proc = run_tool(fleet, "nixos-rebuild", "switch", "--flake", fleet.flake())
    assert proc.returncode == 0, proc.stderr
    assert "restarting the following units: sshd.service" in proc.stdout
    assert generations(profile) == [1, 2]
    listed = run_tool(fleet, "nixos-rebuild", "list-generations")
    assert re.search(r"^\s*2 .*\(current\)$", listed.stdout, re.M), listed.stdout

    back = run_tool(fleet, "nixos-rebuild", "switch", "--rollback")
    assert back.returncode == 0, back.stderr
    assert (fleet.system / "current-system").resolve() == current


def test_darwin_and_home_manager_systems_are_laid_out_like_theirs(fleet):
    proc = run_tool(fleet, "darwin-rebuild", "switch", "--flake", fleet.flake("mac-01"))
    assert proc.returncode == 0, proc.stderr
    darwin = (fleet.system / "current-system").resolve()
    label = json.loads((darwin / "darwin-version.json").read_text())
    assert label["configurationRevision"] == git("rev-parse", "HEAD", cwd=fleet.checkout)
    assert (darwin / "Library/LaunchDaemons/org.nixos.nix-daemon.plist").is_file()
    assert run_tool(fleet, "darwin-rebuild", "--list-generations").stdout.count("\n") == 1

    proc = run_tool(fleet, "home-manager", "switch", "--flake", fleet.flake("mac-01"))
    assert proc.returncode == 0, proc.stderr
    assert "Activating home-manager configuration for mac-01" in proc.stdout
    home = (fleet.system / "profiles" / "home-manager").resolve()
    assert (home / "home-path/bin/ripgrep").exists() and (
        home / "hm-version"
    ).read_text() == "25.05\n"


def test_darwin_rebuild_switches_to_a_chosen_generation_and_the_others_have_no_such_flag(fleet):
    for n in (1, 2):
        commit_change(fleet.root, f"change {n}")
        git("pull", "--quiet", cwd=fleet.checkout)
        proc = run_tool(fleet, "darwin-rebuild", "switch", "--flake", fleet.flake("mac-01"))
        assert proc.returncode == 0, proc.stderr
    profile = fleet.system / "profiles" / "system"
    assert generations(profile) == [1, 2]
    first = (fleet.system / "profiles" / "system-1-link").resolve()
    proc = run_tool(fleet, "darwin-rebuild", "switch", "--switch-generation", "1")
    assert proc.returncode == 0, proc.stderr
    assert "switching profile from version 2 to 1" in proc.stdout
    assert os.readlink(profile) == "system-1-link"
    assert (fleet.system / "current-system").resolve() == first
    assert generations(profile) == [1, 2]  # a move, not a new generation
    missing = run_tool(fleet, "darwin-rebuild", "switch", "-G", "9")
    assert missing.returncode != 0
    assert "profile version 9 does not exist" in missing.stdout + missing.stderr
    assert os.readlink(profile) == "system-1-link"
    for tool in ("nixos-rebuild", "home-manager"):
        other = run_tool(fleet, tool, "switch", "--switch-generation", "1")
        assert other.returncode == 2, tool
        assert "unrecognised flag '--switch-generation'" in other.stderr, tool
    both = run_tool(fleet, "darwin-rebuild", "switch", "--rollback", "--switch-generation", "2")
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_a_broken_host_fails_in_the_nix_build_and_nothing_moves(fleet):
    proc = run_tool(fleet, "nixos-rebuild", "switch", "--flake", fleet.flake("broken"))
    assert proc.returncode == 1
    assert "error: builder for" in proc.stderr
    assert "broken is set up to fail its build" in proc.stderr
    assert not (fleet.system / "current-system").exists()
    assert generations(fleet.system / "profiles" / "system") == []


def test_a_unit_that_fails_to_start_fails_the_switch_with_exit_4_after_activation(fleet):
    path = fleet.root / "fleet-config" / "hosts/web-01/configuration.nix"
    text = path.read_text().replace('args = "-D";', 'args = "-D"; failsToStart = true;')
    commit_change(fleet.root, "sshd cannot start", "hosts/web-01/configuration.nix", text)
    git("pull", "--quiet", cwd=fleet.checkout)
    proc = run_tool(fleet, "nixos-rebuild", "switch", "--flake", fleet.flake())
    assert proc.returncode == 4
    assert "the following units failed: sshd.service" in proc.stdout + proc.stderr
    assert generations(fleet.system / "profiles" / "system") == [1]  # as NixOS: it is active


def test_build_leaves_a_result_link_and_touches_no_host_state(fleet, tmp_path):
    proc = run_tool(fleet, "home-manager", "build", "--flake", fleet.flake("mac-01"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "result").resolve().name.endswith("home-manager-generation")
    assert not fleet.system.exists()


def test_pacing_spreads_the_output(fleet):
    started = time.monotonic()
    proc = run_tool(
        fleet, "nixos-rebuild", "switch", "--flake", fleet.flake(), NIXFLEET_DEMO_PACE="0.2"
    )
    assert proc.returncode == 0, proc.stderr
    lines = len((proc.stdout + proc.stderr).splitlines())
    assert time.monotonic() - started >= 0.2 * lines * 0.9


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate", "--flake", "{co}#web-01"],
        ["switch", "--flake", "{co}"],
        ["switch", "--flake", "{co}#"],
        ["switch", "--flake", "#web-01"],
        ["switch", "--flake"],
        ["switch", "--no-such-flag", "--flake", "{co}#web-01"],
        ["switch", "extra", "--flake", "{co}#web-01"],
        ["switch", "--flake", "{co}#web-01;reboot"],
        ["build", "--rollback"],
        ["switch", "--switch-generation", "x"],
    ],
)
@pytest.mark.parametrize("tool", ["nixos-rebuild", "darwin-rebuild", "home-manager"])
def test_bad_arguments_exit_2(fleet, tool, args):
    proc = run_tool(fleet, tool, *[a.format(co=fleet.checkout) for a in args])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip()


def test_without_nix_the_tools_say_how_to_install_it(fleet, tmp_path):
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    for tool in ("bash", "dirname", "readlink"):
        (bare_path / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    proc = run_tool(fleet, "nixos-rebuild", "switch", "--flake", fleet.flake(), PATH=str(bare_path))
    assert proc.returncode == 127
    assert "apt-get install nix-bin" in proc.stderr


def test_update_nixpkgs_moves_the_lock_and_the_kernel(fleet):
    before = json.loads((fleet.root / "fleet-config" / "flake.lock").read_text())
    update_nixpkgs(fleet.root)
    git("pull", "--quiet", cwd=fleet.checkout)
    after = json.loads((fleet.checkout / "flake.lock").read_text())
    moved = after["nodes"]["nixpkgs"]["locked"]["lastModified"]
    assert moved == before["nodes"]["nixpkgs"]["locked"]["lastModified"] + 7 * 86400
    proc = run_tool(fleet, "nixos-rebuild", "build", "--flake", fleet.flake(), cwd=fleet.checkout)
    assert proc.returncode == 0, proc.stderr
    result = fleet.checkout / "result"
    assert (result / "kernel").resolve().parent.name.endswith("-linux-6.6.31")
    day = time.strftime("%Y%m%d", time.gmtime(moved))
    assert (result / "nixos-version").read_text().strip() == f"25.05.{day}." + (
        after["nodes"]["nixpkgs"]["locked"]["rev"][:7]
    )


@pytest.mark.parametrize("host", ["web-01", "mac-01", "broken"])
def test_host_test_scripts(fleet, host):
    tests_dir = fleet.checkout / "hosts" / host / "tests"
    for name in ("T01-ssh.sh", "T02-disk.sh", "T03-services.sh"):
        script = tests_dir / name
        assert os.access(script, os.X_OK), f"{script} lost its exec bit through git"
        proc = subprocess.run([str(script)], capture_output=True, text=True, check=False)
        assert proc.stdout.strip()
        failing = host == "broken" and name == "T03-services.sh"
        assert proc.returncode == (1 if failing else 0)


def test_commit_change_visible_on_bare_repo(fleet):
    before = git("ls-remote", str(fleet.bare), "refs/heads/main").split()[0]
    new = commit_change(fleet.root, "Tune sshd", "hosts/web-01/extra.nix", "{ }\n")
    assert re.fullmatch(r"[0-9a-f]{40}", new)
    assert new != before
    assert git("ls-remote", str(fleet.bare), "refs/heads/main").split()[0] == new
    again = commit_change(fleet.root, "Same content again", "hosts/web-01/extra.nix", "{ }\n")
    assert again != new
    appended = commit_change(fleet.root, "note")
    assert git("ls-remote", str(fleet.bare), "refs/heads/main").split()[0] == appended
    with pytest.raises(ValueError):
        commit_change(fleet.root, "escape", "../outside.txt", "x")


def test_custom_branch(tmp_path):
    bare = create_config_repo(tmp_path, [("solo", "nixos")], branch="trunk")
    assert git("symbolic-ref", "HEAD", cwd=bare) == "refs/heads/trunk"
    new = commit_change(tmp_path, "on trunk")
    assert git("ls-remote", str(bare), "refs/heads/trunk").split()[0] == new


def test_invalid_arguments_rejected(tmp_path):
    with pytest.raises(ValueError):
        create_config_repo(tmp_path / "a", [("h", "windows")])
    with pytest.raises(ValueError):
        create_config_repo(tmp_path / "b", [("h", "nixos")], failing=["other"])
    with pytest.raises(ValueError):
        create_config_repo(tmp_path / "c", [("../evil", "nixos")])
    create_config_repo(tmp_path / "d", [("h", "nixos")])
    with pytest.raises(FileExistsError):
        create_config_repo(tmp_path / "d", [("h", "nixos")])
