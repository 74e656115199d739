"""The rules behind the fleet view: deploy state, reboot reason, plan summaries, and the
bounds on what an agent may report about them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from nixfleet.agent.preview import parse_diff_closures
from nixfleet.core.drift import (
    DeployState,
    bulk_plan_summary,
    deploy_state,
    plan_summary,
    reboot_state,
)
from nixfleet.core.protocol import agent_message

A, B = "a" * 40, "b" * 40


def _ancestry(answer):
    return lambda commit, target: answer


@pytest.mark.parametrize(
    ("deployed", "has_deployed", "target", "last", "ancestor", "state"),
    [
        (A, True, A, "succeeded", None, DeployState.CURRENT),
        (A, True, B, "succeeded", True, DeployState.BEHIND),
        (A, True, B, "succeeded", False, DeployState.DIVERGED),
        (A, True, B, "succeeded", None, DeployState.UNKNOWN),
        (A, True, A, "failed", None, DeployState.FAILED),
        (A, True, A, "timed_out", None, DeployState.FAILED),
        ("", False, A, None, None, DeployState.NEVER_DEPLOYED),
        ("", True, A, "succeeded", None, DeployState.UNKNOWN),
        (A, True, None, "succeeded", None, DeployState.UNKNOWN),
    ],
)
def test_the_deploy_state_an_operator_can_tell_apart(
    deployed, has_deployed, target, last, ancestor, state
):
    assert deploy_state(deployed, has_deployed, target, last, _ancestry(ancestor)) is state


def test_reboot_is_about_boot_files_and_not_applicable_on_macos():
    boot = {"kernel": "/nix/store/k", "initrd": "/nix/store/i", "kernel_modules": "/nix/store/m"}
    same = {"current_boot": boot, "booted_boot": dict(boot)}
    assert reboot_state("nixos", same) == {"needed": False, "reason": ""}
    kernel = {"current_boot": boot, "booted_boot": {**boot, "kernel": "/nix/store/k0"}}
    assert reboot_state("nixos", kernel) == {"needed": True, "reason": "kernel changed since boot"}
    assert reboot_state("macos", kernel)["needed"] is None


def test_diff_closures_output_is_read_with_its_colours_and_empty_sets():
    text = (
        "initrd-linux: 6.6.30 → 6.6.31\n"
        "linux: 6.6.30 → 6.6.31, \x1b[31;1m+4.0 KiB\x1b[0m\n"
        "nginx: ∅ → 1.26.2, \x1b[31;1m+20.7 KiB\x1b[0m\n"
        "vim: 9.1.0 → ∅, \x1b[32;1m-30.7 KiB\x1b[0m\n"
        "system-path: \x1b[31;1m+12.5 KiB\x1b[0m\n"
        "not a change line\n"
    )
    got = [(c.name, c.before, c.after, c.size_delta) for c in parse_diff_closures(text)]
    assert got == [
        ("initrd-linux", "6.6.30", "6.6.31", 0),
        ("linux", "6.6.30", "6.6.31", 4096),
        ("nginx", "", "1.26.2", 21197),
        ("vim", "9.1.0", "", -31437),
        ("system-path", "", "", 12800),
    ]


def test_plan_summaries_for_one_host_and_for_a_selection():
    bump = {"name": "linux", "from": "6.6.30", "to": "6.6.31", "size_delta": 4096}
    kernel = {"changed": True, "changes": [bump], "reboot": True, "size_delta": 4096}
    config = {"changed": True, "changes": [], "restart": ["nginx.service"], "size_delta": 0}
    same = {"changed": False, "changes": []}
    assert plan_summary(same) == "no change"
    assert plan_summary(kernel) == "linux 6.6.30 → 6.6.31; reboot needed (+4.0 KiB)"
    assert plan_summary(config) == "restarts nginx.service (+0.0 KiB)"
    broken = {"changed": False, "error": "the build failed (exit 1)"}
    assert bulk_plan_summary([kernel, kernel, config, same, broken]) == (
        "5 hosts: 3 would change, 1 identical, 1 failed to build; "
        "linux 6.6.30 → 6.6.31 on 2, reboot on 2"
    )


def _finished_with(plan: dict) -> str:
    return json.dumps(
        {
            "type": "finished",
            "command_id": "c1",
            "result": "succeeded",
            "exit_code": 0,
            "duration_s": 1.0,
            "last_seq": 0,
            "plan": {"changed": True, **plan},
        }
    )


@pytest.mark.parametrize(
    "plan",
    [
        {"changes": [{"name": "x"}] * 501},
        {"changes": [{"name": "x" * 121}]},
        {"target_commit": "not-a-commit; rm -rf /"},
        {"size_delta": 2**70},
        {"restart": ["u.service"] * 201},
        {"system": "/nix/store/" + "x" * 2000},
    ],
    ids=["too many changes", "long name", "bad commit", "huge size", "many units", "long path"],
)
def test_an_agent_cannot_report_an_unbounded_plan(plan):
    with pytest.raises(ValidationError):
        agent_message.validate_json(_finished_with(plan))


def test_an_agent_cannot_claim_a_deployed_commit_that_is_no_commit():
    status = {"type": "status", "status": {"deployed_commit": "HEAD~1"}}
    with pytest.raises(ValidationError):
        agent_message.validate_json(json.dumps(status))
