"""Alert rules: a threshold of matching security events within a sliding window.

An incident starts when the count in the window reaches the threshold and ends when it
falls below again. Each incident sends one "firing" and one "resolved" message, unless it
starts within the cooldown of the last alert sent: then it is tracked but stays silent.
Pure logic with an explicit clock, so tests drive it without sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nixfleet.core.secevents import SecurityEvent


class AlertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")
    kind: str = Field(min_length=1, max_length=32)  # an EventKind value
    details: tuple[str, ...] = ()  # match only these details (factor, reason); empty = any
    threshold: int = Field(ge=1)
    window_s: float = Field(gt=0)
    cooldown_s: float = Field(ge=0)
    summary: str = Field("", max_length=200)

    def matches(self, event: SecurityEvent) -> bool:
        return event.kind.value == self.kind and (not self.details or event.detail in self.details)


DEFAULT_RULES = (
    AlertRule(
        name="login_failures",
        kind="auth_failure",
        details=("password", "totp"),
        threshold=10,
        window_s=300,
        cooldown_s=3600,
        summary="Many failed logins: someone may be guessing passwords",
    ),
    AlertRule(
        name="cross_host_tokens",
        kind="auth_failure",
        details=("cross_host",),
        threshold=3,
        window_s=3600,
        cooldown_s=3600,
        summary="Agent tokens presented for another host",
    ),
    AlertRule(
        name="tls_pin_mismatch",
        kind="tls_failure",
        details=("pin_mismatch",),
        threshold=1,
        window_s=600,
        cooldown_s=3600,
        summary="An agent saw a TLS certificate that does not match its pin",
    ),
    AlertRule(
        name="rate_limit_burst",
        kind="rate_limited",
        threshold=50,
        window_s=60,
        cooldown_s=1800,
        summary="A burst of rate-limited requests",
    ),
)


@dataclass(frozen=True)
class Transition:
    rule: AlertRule
    state: Literal["firing", "resolved"]
    at: float
    count: int
    addresses: tuple[str, ...]


@dataclass
class RuleState:
    rule: AlertRule
    times: deque[tuple[float, str]] = field(default_factory=deque)
    firing: bool = False
    silent: bool = False  # this incident started inside the cooldown
    since: float = 0.0
    last_sent: float | None = None

    def _trim(self, now: float) -> None:
        while self.times and self.times[0][0] <= now - self.rule.window_s:
            self.times.popleft()

    def _transition(self, state: Literal["firing", "resolved"], now: float) -> Transition:
        addresses = tuple(dict.fromkeys(a for _, a in self.times if a))[:10]
        return Transition(self.rule, state, now, len(self.times), addresses)

    def observe(self, event: SecurityEvent, now: float) -> Transition | None:
        """Return a firing transition if this event starts a (non-silent) incident."""
        self._trim(now)
        self.times.append((now, event.address))
        if self.firing or len(self.times) < self.rule.threshold:
            return None
        self.firing, self.since = True, now
        self.silent = self.last_sent is not None and now - self.last_sent < self.rule.cooldown_s
        if self.silent:
            return None
        self.last_sent = now
        return self._transition("firing", now)

    def tick(self, now: float) -> Transition | None:
        """Return a resolved transition if the incident ended by now."""
        self._trim(now)
        if not self.firing or len(self.times) >= self.rule.threshold:
            return None
        self.firing = False
        if self.silent:
            return None
        return self._transition("resolved", now)

    def next_deadline(self) -> float | None:
        """Return when tick() could next change something (an event leaving the window)."""
        if not self.firing or not self.times:
            return None
        return self.times[0][0] + self.rule.window_s


class RuleEngine:
    def __init__(self, rules: tuple[AlertRule, ...] | list[AlertRule]) -> None:
        self.states = [RuleState(rule) for rule in rules]

    def observe(self, event: SecurityEvent, now: float) -> list[Transition]:
        out = [s.observe(event, now) for s in self.states if s.rule.matches(event)]
        return [t for t in out if t is not None]

    def tick(self, now: float) -> list[Transition]:
        return [t for t in (s.tick(now) for s in self.states) if t is not None]

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (s.next_deadline() for s in self.states) if d is not None]
        return min(deadlines, default=None)


def parse_rules(doc: dict[str, object]) -> list[AlertRule]:
    """Return the rules of a TOML document: `[[rule]]` tables; `defaults = false` drops ours.

    Raises ValueError naming the rule and the field (the caller makes it a ConfigError).
    """
    raw = doc.get("rule", [])
    if not isinstance(raw, list):
        raise ValueError("alerts: `rule` must be an array of tables ([[rule]])")
    rules = []
    for i, item in enumerate(raw, 1):
        try:
            rules.append(AlertRule.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "rule"
            name = item.get("name", "?") if isinstance(item, dict) else "?"
            raise ValueError(f"alerts: rule {i} ({name}): {where}: {err['msg']}") from None
    if doc.get("defaults", True):
        mine = {r.name for r in rules}
        rules = [r for r in DEFAULT_RULES if r.name not in mine] + rules
    return rules
