"""Rollout rules: waves, the failure budget, the state machine, the report and the plan."""

from __future__ import annotations

import pytest

from nixfleet.core.errors import ValidationError
from nixfleet.core.rollouts import (
    Outcome,
    RolloutPolicy,
    RolloutState,
    WaveVerdict,
    can_move,
    describe_plan,
    outcome_of,
    parse_policy,
    plan_waves,
    report,
    rollout_kind,
    wave_verdict,
)

HOSTS = [f"web-{i:02d}" for i in range(1, 11)]


def test_a_canary_of_two_then_waves_of_four_covers_every_host_once():
    waves = plan_waves(list(reversed(HOSTS)), RolloutPolicy(canary=2, wave_size=4))
    assert waves == [HOSTS[:2], HOSTS[2:6], HOSTS[6:10]]


def test_percentages_round_up_and_the_larger_of_count_and_share_wins():
    waves = plan_waves(HOSTS, RolloutPolicy(canary=1, canary_percent=15, wave_percent=30))
    assert [len(w) for w in waves] == [2, 3, 3, 2]
    assert sorted(h for w in waves for h in w) == HOSTS


def test_without_a_wave_size_the_rest_goes_in_one_wave():
    assert [len(w) for w in plan_waves(HOSTS, RolloutPolicy(canary=3))] == [3, 7]


def test_a_canary_larger_than_the_fleet_is_the_whole_fleet():
    assert plan_waves(HOSTS[:2], RolloutPolicy(canary=5, wave_size=1)) == [HOSTS[:2]]


def test_grouped_waves_never_mix_labels_and_the_canary_tries_each_label():
    labels = {h: ("rack A" if i % 2 else "rack B") for i, h in enumerate(HOSTS)}
    waves = plan_waves(HOSTS, RolloutPolicy(canary=2, wave_size=3, group_by="location"), labels)
    assert {labels[h] for h in waves[0]} == {"rack A", "rack B"}
    for wave in waves[1:]:
        assert len({labels[h] for h in wave}) == 1
    assert sorted(h for w in waves for h in w) == HOSTS


def test_a_wave_over_its_failure_budget_stops_before_its_other_hosts_finish():
    outcomes = [Outcome.FAILED, Outcome.ROLLED_BACK, Outcome.RUNNING]
    assert wave_verdict(outcomes, failure_budget=1) == WaveVerdict.OVER_BUDGET
    assert wave_verdict(outcomes[1:], failure_budget=1) == WaveVerdict.PENDING
    assert wave_verdict([Outcome.SUCCEEDED, Outcome.LOST], 1) == WaveVerdict.PASSED
    assert wave_verdict([Outcome.SUCCEEDED, Outcome.TIMED_OUT], 0) == WaveVerdict.OVER_BUDGET


def test_a_cancelled_host_is_not_a_failure_and_an_unknown_state_is_not_a_success():
    assert wave_verdict([Outcome.CANCELLED, Outcome.SUCCEEDED], 0) == WaveVerdict.PASSED
    assert outcome_of("exploded", True) == Outcome.FAILED
    assert outcome_of(None, True) == Outcome.WAITING
    assert outcome_of(None, False) == Outcome.NOT_STARTED


def test_the_state_machine_lets_an_ended_rollout_stay_ended():
    assert can_move(RolloutState.RUNNING, RolloutState.PAUSED)
    assert can_move(RolloutState.PAUSED, RolloutState.RUNNING)
    assert can_move(RolloutState.PAUSED, RolloutState.ABORTED)
    for final in (RolloutState.COMPLETED, RolloutState.STOPPED, RolloutState.ABORTED):
        assert not any(can_move(final, dst) for dst in RolloutState)


def test_the_report_reads_as_the_issue_asks():
    outcomes = (
        [(Outcome.SUCCEEDED, "")] * 48
        + [(Outcome.ROLLED_BACK, "health check web: HTTP 502"), (Outcome.FAILED, "exit 1")]
        + [(Outcome.NOT_STARTED, "")] * 10
    )
    assert report(outcomes, RolloutState.STOPPED) == (
        "48 succeeded, 1 rolled back (health check web: HTTP 502), 1 failed (exit 1), "
        "10 not started: stopped by the failure budget"
    )
    assert report([(Outcome.SUCCEEDED, "")] * 3, RolloutState.COMPLETED) == "3 succeeded"


def test_policies_are_read_from_words_and_bad_ones_are_refused_by_name():
    policy = parse_policy("canary=2 waves=25% pause=60 budget=1 group=location")
    assert policy == RolloutPolicy(
        canary=2, wave_percent=25, pause_s=60, failure_budget=1, group_by="location"
    )
    assert parse_policy("canary=10%").canary_percent == 10
    assert parse_policy("group=role").group_by == "role"  # any label key
    for bad, word in [("canary=-1", "canary"), ("speed=3", "speed"), ("group=Colour!", "group"),
                      ("pause=nan", "pause"), ("waves=200%", "wave_percent")]:  # fmt: skip
        with pytest.raises(ValidationError, match=word):
            parse_policy(bad)


def test_only_kinds_that_run_a_process_can_be_rolled_out():
    assert rollout_kind("switch").value == "switch"
    for bad in ("restart", "stop", "reboot"):
        with pytest.raises(ValidationError, match="cannot be rolled out"):
            rollout_kind(bad)


def test_the_confirmation_says_what_will_happen():
    policy = RolloutPolicy(canary=1, wave_size=2, pause_s=30, failure_budget=0)
    text = describe_plan("switch", [["atlas"], ["borealis", "cirrus"], ["dune"]], policy)
    assert text.startswith("Switch on 4 hosts in 3 waves: first atlas, then waves of 1 or 2.")
    assert "waits 30 s" in text and "as soon as one host of a wave fails" in text
    text = describe_plan("test", [["atlas"]], RolloutPolicy(failure_budget=2))
    assert text.startswith("Test on 1 host in 1 wave.") and "more than 2 hosts" in text
    # In the words of the buttons: the fleet page's Deploy is a pull-switch.
    text = describe_plan("pull-switch", [["atlas"], ["borealis"]], policy)
    assert text.startswith("Deploy (pull + switch) on 2 hosts in 2 waves: first atlas")
