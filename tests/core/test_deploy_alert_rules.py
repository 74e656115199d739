"""Deploy notification rules: defaults, the rules file's [[deploy]] tables, the cooldown."""

from __future__ import annotations

import pytest

from nixfleet.core.deploy_alerts import Cooldowns, DeployEvent, parse_deploy_rules


def test_a_host_that_fails_again_inside_the_cooldown_is_held_back_and_counted():
    rules = parse_deploy_rules({"deploy": [{"event": "deploy_failed", "cooldown_s": 60}]})
    gate = Cooldowns(rules)
    assert gate.admit(DeployEvent.DEPLOY_FAILED, "web-01", 0) == (True, 0)
    assert gate.admit(DeployEvent.DEPLOY_FAILED, "web-01", 10) == (False, 0)
    assert gate.admit(DeployEvent.DEPLOY_FAILED, "web-01", 20) == (False, 0)
    assert gate.admit(DeployEvent.DEPLOY_FAILED, "web-02", 20) == (True, 0)  # its own
    assert gate.admit(DeployEvent.DEPLOY_TIMED_OUT, "web-01", 20) == (True, 0)  # another event
    assert gate.admit(DeployEvent.DEPLOY_FAILED, "web-01", 61) == (True, 2)


def test_an_event_switched_off_is_never_sent():
    rules = parse_deploy_rules({"deploy": [{"event": "rollout_finished", "enabled": False}]})
    assert Cooldowns(rules).admit(DeployEvent.ROLLOUT_FINISHED, "r1", 0) == (False, 0)
    assert Cooldowns(rules).admit(DeployEvent.ROLLOUT_STOPPED, "r1", 0) == (True, 0)


def test_memory_is_bounded_whatever_the_number_of_hosts():
    gate = Cooldowns(parse_deploy_rules({}), max_keys=100)
    for i in range(1000):
        gate.admit(DeployEvent.DEPLOY_FAILED, f"h{i}", 0)
    assert len(gate._last) == 100


@pytest.mark.parametrize(
    ("doc", "word"),
    [
        ({"deploy": {"event": "deploy_failed"}}, "array of tables"),
        ({"deploy": [{"event": "deploy_exploded"}]}, "event"),
        ({"deploy": [{"event": "deploy_failed", "cooldown_s": -1}]}, "cooldown_s"),
        ({"deploy": [{"event": "deploy_failed", "cooldown_s": float("nan")}]}, "cooldown_s"),
        ({"deploy": [{"event": "deploy_failed", "colour": "red"}]}, "colour"),
    ],
)
def test_a_bad_deploy_rule_is_refused_naming_the_field(doc, word):
    with pytest.raises(ValueError, match=word):
        parse_deploy_rules(doc)
