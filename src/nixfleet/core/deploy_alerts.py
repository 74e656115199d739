"""Notifications for deploys: which events are sent, and the cooldown that keeps a
flapping host from flooding the channels. Pure logic with an explicit clock.

Set in the alert rules file (NIXFLEET_ALERT_RULES_FILE) with `[[deploy]]` tables:

    [[deploy]]
    event = "deploy_failed"  # or deploy_timed_out, deploy_rolled_back, rollout_stopped,
    enabled = true           #    rollout_finished
    cooldown_s = 600         # per host (deploys) or rollout; held back meanwhile, counted
"""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class DeployEvent(StrEnum):
    DEPLOY_FAILED = "deploy_failed"
    DEPLOY_TIMED_OUT = "deploy_timed_out"
    DEPLOY_ROLLED_BACK = "deploy_rolled_back"
    ROLLOUT_STOPPED = "rollout_stopped"  # by its failure budget
    ROLLOUT_FINISHED = "rollout_finished"  # completed or aborted: its report


class DeployRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    event: DeployEvent
    enabled: bool = True
    cooldown_s: float = Field(600, ge=0, le=7 * 86400, allow_inf_nan=False)


DEFAULT_DEPLOY_RULES = {
    DeployEvent.DEPLOY_FAILED: DeployRule(event=DeployEvent.DEPLOY_FAILED),
    DeployEvent.DEPLOY_TIMED_OUT: DeployRule(event=DeployEvent.DEPLOY_TIMED_OUT),
    DeployEvent.DEPLOY_ROLLED_BACK: DeployRule(event=DeployEvent.DEPLOY_ROLLED_BACK),
    DeployEvent.ROLLOUT_STOPPED: DeployRule(event=DeployEvent.ROLLOUT_STOPPED, cooldown_s=0),
    DeployEvent.ROLLOUT_FINISHED: DeployRule(event=DeployEvent.ROLLOUT_FINISHED, cooldown_s=0),
}
# A command's final state → the event it is, for deploy kinds.
EVENT_OF_STATE = {
    "failed": DeployEvent.DEPLOY_FAILED,
    "timed_out": DeployEvent.DEPLOY_TIMED_OUT,
    "rolled_back": DeployEvent.DEPLOY_ROLLED_BACK,
}


def parse_deploy_rules(doc: dict[str, object]) -> dict[DeployEvent, DeployRule]:
    """Return the deploy rules of a rules file: the defaults, with `[[deploy]]` on top.

    Raises ValueError naming the table and the field (the caller makes it a ConfigError).
    """
    raw = doc.get("deploy", [])
    if not isinstance(raw, list):
        raise ValueError("alerts: `deploy` must be an array of tables ([[deploy]])")
    rules = dict(DEFAULT_DEPLOY_RULES)
    for i, item in enumerate(raw, 1):
        try:
            rule = DeployRule.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "deploy"
            raise ValueError(f"alerts: deploy rule {i}: {where}: {err['msg']}") from None
        rules[rule.event] = rule
    return rules


class Cooldowns:
    """Decide which deploy notifications go out; count the ones held back.

    Keys are (event, host or rollout); at most `max_keys` are remembered (the oldest is
    forgotten first), so a fleet of any size costs a bounded amount of memory.
    """

    def __init__(self, rules: dict[DeployEvent, DeployRule], max_keys: int = 10_000) -> None:
        self.rules = rules
        self.max_keys = max_keys
        self._last: OrderedDict[tuple[DeployEvent, str], tuple[float, int]] = OrderedDict()

    def admit(self, event: DeployEvent, key: str, now: float) -> tuple[bool, int]:
        """Return (send it?, how many of this event and key were held back before it)."""
        rule = self.rules[event]
        if not rule.enabled:
            return False, 0
        last = self._last.get((event, key))
        if last is not None and now - last[0] < rule.cooldown_s:
            self._last[(event, key)] = (last[0], last[1] + 1)
            return False, 0
        self._last[(event, key)] = (now, 0)
        self._last.move_to_end((event, key))
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True, last[1] if last is not None else 0
