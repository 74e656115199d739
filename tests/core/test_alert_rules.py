"""Alert rules: one alert per incident, a "resolved" when it ends, silence in the cooldown."""

from __future__ import annotations

import pytest

from nixfleet.core.alerts import DEFAULT_RULES, AlertRule, RuleEngine, parse_rules
from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent

RULE = AlertRule(
    name="logins",
    kind="auth_failure",
    details=("password",),
    threshold=10,
    window_s=300,
    cooldown_s=3600,
)


def bad_login(address: str = "192.0.2.1") -> SecurityEvent:
    return SecurityEvent(EventKind.AUTH_FAILURE, address=address, detail=AuthFactor.PASSWORD)


def burst(engine: RuleEngine, start: float, n: int = 12) -> list[str]:
    out = []
    for i in range(n):
        out += [t.state for t in engine.observe(bad_login(), start + i)]
    return out


def test_a_burst_fires_once_and_resolves_when_the_window_empties():
    engine = RuleEngine([RULE])
    assert burst(engine, 1000) == ["firing"]
    assert engine.tick(1000 + 12 + 200) == []  # still ≥ 10 in the window
    assert engine.next_deadline() == 1000 + 300  # the first failure leaves the window then
    resolved = engine.tick(1000 + 11 + 300)
    assert [t.state for t in resolved] == ["resolved"]
    assert engine.tick(5000) == []


def test_a_second_burst_inside_the_cooldown_sends_nothing_and_after_it_alerts_again():
    engine = RuleEngine([RULE])
    assert burst(engine, 1000) == ["firing"]
    assert [t.state for t in engine.tick(2000)] == ["resolved"]
    assert burst(engine, 2100) == []
    assert engine.states[0].firing and engine.states[0].silent
    assert engine.tick(3000) == []  # the silent incident ends silently too
    assert burst(engine, 1000 + 3600 + 10) == ["firing"]


def test_nine_failures_or_other_factors_do_not_fire():
    engine = RuleEngine([RULE])
    assert burst(engine, 1000, n=9) == []
    other = SecurityEvent(EventKind.AUTH_FAILURE, detail=AuthFactor.AGENT_TOKEN)
    assert all(engine.observe(other, 1010 + i) == [] for i in range(20))


def test_the_alert_names_the_offending_addresses():
    engine = RuleEngine([RULE])
    fired = []
    for i in range(10):
        fired += engine.observe(bad_login(f"198.51.100.{i % 2}"), 1000 + i)
    assert fired[0].addresses == ("198.51.100.0", "198.51.100.1")
    assert fired[0].count == 10


def test_rules_from_toml_replace_a_default_by_name_or_drop_all_defaults():
    doc = {"rule": [{**RULE.model_dump(), "name": "login_failures", "threshold": 3}]}
    rules = {r.name: r for r in parse_rules(doc)}
    assert rules["login_failures"].threshold == 3
    assert set(rules) == {r.name for r in DEFAULT_RULES}
    assert [r.name for r in parse_rules({**doc, "defaults": False})] == ["login_failures"]


@pytest.mark.parametrize(
    "bad",
    [{"threshold": 0}, {"window_s": -1}, {"name": "Bad Name"}, {"surprise": 1}],
)
def test_a_bad_rule_is_refused(bad):
    with pytest.raises(ValueError):
        parse_rules({"rule": [{**RULE.model_dump(), **bad}]})
