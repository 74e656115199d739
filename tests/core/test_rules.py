"""The shared rules: host ids, command kinds and the state machine."""

from __future__ import annotations

import pytest

from nixfleet.core.branch import check_branch
from nixfleet.core.commands import CommandState, can_move, parse_kind, supersedes_queued
from nixfleet.core.drift import Drift, commit_drift, reboot_reason
from nixfleet.core.errors import InvalidHostId, UnknownCommandKind, ValidationError
from nixfleet.core.hostid import canonical_host_id


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("web-01", "web-01"),
        (" Web-01 ", "web-01"),
        ("a", "a"),
        ("x" * 63, "x" * 63),
        ("0ab", "0ab"),
    ],
)
def test_host_ids_are_canonicalised(raw, canonical):
    assert canonical_host_id(raw) == canonical


@pytest.mark.parametrize(
    "raw", ["", "-a", "a-", "a_b", "a.b", "x" * 64, "a b", "ä", "a;rm", "../etc", "a\nb"]
)
def test_bad_host_ids_are_refused_with_the_rule_in_the_message(raw):
    with pytest.raises(InvalidHostId, match="1-63 characters"):
        canonical_host_id(raw)


def test_an_unknown_command_kind_names_the_valid_ones():
    with pytest.raises(
        UnknownCommandKind, match="pull, switch, pull-switch, test, plan, rollback, stop, restart"
    ):
        parse_kind("reboot")


def test_finished_commands_never_change_state_again():
    for final in (CommandState.SUCCEEDED, CommandState.FAILED, CommandState.CANCELLED):
        for target in CommandState:
            assert not can_move(final, target)
    assert can_move(CommandState.QUEUED, CommandState.DISPATCHED)
    assert can_move(CommandState.DISPATCHED, CommandState.QUEUED)  # never arrived: resend
    assert not can_move(CommandState.QUEUED, CommandState.RUNNING)
    # A late true result from an agent that came back overrides the "lost" verdict.
    assert can_move(CommandState.LOST, CommandState.SUCCEEDED)
    assert not can_move(CommandState.LOST, CommandState.RUNNING)


def test_only_switches_supersede_queued_switches():
    assert supersedes_queued(parse_kind("switch"))
    assert supersedes_queued(parse_kind("pull-switch"))
    assert not supersedes_queued(parse_kind("test"))


def test_drift_and_reboot():
    assert commit_drift("abc", "abc") is Drift.CURRENT
    assert commit_drift("abc", "def") is Drift.BEHIND
    assert commit_drift("", "def") is Drift.UNKNOWN
    same = {"kernel": "/nix/store/k1", "initrd": "/nix/store/i1", "kernel_modules": "/nix/store/m1"}
    assert reboot_reason(same, dict(same)) == ""
    assert reboot_reason(same, {**same, "initrd": "/nix/store/i2"}) == "initrd changed since boot"
    assert reboot_reason(same, {**same, "kernel": "/nix/store/k2", "kernel_modules": "x"}) == (
        "kernel and kernel modules changed since boot"
    )


@pytest.mark.parametrize("name", ["main", "release/25.05", "feature_x-1", "v1.2"])
def test_ordinary_branch_names_are_accepted(name):
    assert check_branch(name) == name


@pytest.mark.parametrize(
    "name",
    ["-x", "--upload-pack=sh", "a..b", "a b", "a;b", "a/", "x.lock", "$(id)", "", "a//b", "a\nb"],
)
def test_branch_names_that_git_or_a_shell_could_misread_are_refused(name):
    with pytest.raises(ValidationError, match="not accepted"):
        check_branch(name)
