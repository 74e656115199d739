"""Rollouts: a command for many hosts, given in waves that stop when a wave fails too much.

Pure rules, no I/O: the policy and its bounds, the wave plan, the verdict on a wave, the
rollout state machine and the report sentence. The engine (dashboard/fleet/rollouts.py)
stores and acts on what these decide.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nixfleet.core.commands import KIND_RULES, CommandKind
from nixfleet.core.errors import ValidationError as NixValidationError
from nixfleet.core.labels import merged

MAX_HOSTS = 10_000
# Host fields a rollout may group by besides any label key: waves never mix two values.
GROUP_LABELS = ("location", "device_type")


class RolloutPolicy(BaseModel):
    """How a rollout is cut into waves and when it stops.

    canary / canary_percent: the first wave (hosts or share of all; the larger wins, at
    least one host). wave_size / wave_percent: each later wave (the larger wins; neither
    means one wave with all the rest). failure_budget: a wave with more failures than this
    stops the rollout. pause_s: the wait after a wave passed before the next one starts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    canary: int = Field(1, ge=0, le=MAX_HOSTS)
    canary_percent: float = Field(0, ge=0, le=100)
    wave_size: int = Field(0, ge=0, le=MAX_HOSTS)
    wave_percent: float = Field(0, ge=0, le=100)
    pause_s: float = Field(0, ge=0, le=7 * 86400)
    failure_budget: int = Field(0, ge=0, le=MAX_HOSTS)
    # "", a host field of GROUP_LABELS, or a label key (core.labels).
    group_by: str = Field(
        "", pattern=r"^(location|device_type|[a-z0-9]([a-z0-9._-]{0,30}[a-z0-9])?)?$"
    )

    @model_validator(mode="after")
    def _finite(self) -> RolloutPolicy:
        if not all(
            math.isfinite(v) for v in (self.canary_percent, self.wave_percent, self.pause_s)
        ):
            raise ValueError("numbers must be finite")
        return self


def rollout_kind(raw: str) -> CommandKind:
    """Return the kind a rollout may carry (a process-running kind), or raise."""
    try:
        kind = CommandKind(raw)
    except ValueError:
        kind = None
    if kind is None or not KIND_RULES[kind].runs_process:
        ok = ", ".join(k.value for k, r in KIND_RULES.items() if r.runs_process)
        raise NixValidationError(f"rollouts: {str(raw)[:40]!r} cannot be rolled out; use {ok}")
    return kind


def parse_policy(spec: str) -> RolloutPolicy:
    """Return the policy written as "canary=2 waves=25% pause=60 budget=1 group=location".

    `canary` and `waves` take a count or a percentage. Used for settings (deploy on push)
    and the CLI, where JSON would be awkward; raises ValidationError naming the word.
    """
    fields: dict[str, object] = {}
    names = {"canary": "canary", "waves": "wave", "pause": "pause_s", "budget": "failure_budget"}
    for word in spec.replace(",", " ").split():
        key, eq, value = word.partition("=")
        if not eq or key not in (*names, "group"):
            raise NixValidationError(
                f"rollouts: {word[:40]!r} in the policy is not one of canary=, waves=, "
                "pause=, budget=, group="
            )
        if key == "group":
            fields["group_by"] = value
        elif key in ("canary", "waves") and value.endswith("%"):
            fields[f"{names[key]}_percent" if key == "canary" else "wave_percent"] = value[:-1]
        elif key == "waves":
            fields["wave_size"] = value
        else:
            fields[names[key]] = value
    try:
        return RolloutPolicy.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "policy"
        raise NixValidationError(f"rollouts: policy {where}: {err['msg']}") from None


def group_value(host: Mapping[str, object], group_by: str) -> str:
    """Return the value a stored host row has for group_by: a host field or a label."""
    if group_by in GROUP_LABELS:
        return str(host.get(group_by) or "")
    labels, _ = merged(host.get("labels"), host.get("host_labels"))
    return labels.get(group_by, "")


def _share(total: int, count: int, percent: float) -> int:
    return max(count, math.ceil(total * percent / 100))


def _groups(host_ids: Sequence[str], labels: Mapping[str, str]) -> list[list[str]]:
    by: dict[str, list[str]] = {}
    for host_id in sorted(host_ids):
        by.setdefault(labels.get(host_id, ""), []).append(host_id)
    return [by[k] for k in sorted(by)]


def plan_waves(
    host_ids: Sequence[str], policy: RolloutPolicy, labels: Mapping[str, str] | None = None
) -> list[list[str]]:
    """Return the waves: lists of host ids, the canary first; every host in exactly one.

    1. Hosts are sorted (by label value, then id, when grouping), so a plan is repeatable.
    2. The canary takes its size from the front; when grouping, one host of each label
       value in turn, so every group is tried before any group goes wide.
    3. The rest is cut into waves of the wave size within each group (a wave never
       straddles two label values); without a wave size, the rest is one wave per group.
    """
    hosts = list(dict.fromkeys(host_ids))
    if not hosts:
        return []
    groups = _groups(hosts, labels or {}) if policy.group_by else [sorted(hosts)]
    canary_n = min(len(hosts), _share(len(hosts), policy.canary, policy.canary_percent))
    canary: list[str] = []
    while len(canary) < canary_n:
        for group in groups:
            if group and len(canary) < canary_n:
                canary.append(group.pop(0))
    size = _share(len(hosts), policy.wave_size, policy.wave_percent)
    waves = [canary] if canary else []
    for group in groups:
        step = size or len(group) or 1
        waves += [group[i : i + step] for i in range(0, len(group), step)]
    return [w for w in waves if w]


class Outcome(StrEnum):
    """A host's outcome in a rollout: its command's state, or why it has none."""

    WAITING = "waiting"  # in a wave that has not started
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    CANCELLED = "cancelled"
    NOT_STARTED = "not_started"  # the rollout ended before its wave


FAILURES = frozenset({Outcome.FAILED, Outcome.ROLLED_BACK, Outcome.TIMED_OUT, Outcome.LOST})
PENDING = frozenset({Outcome.WAITING, Outcome.QUEUED, Outcome.DISPATCHED, Outcome.RUNNING})


def outcome_of(command_state: str | None, rollout_open: bool) -> Outcome:
    """Return a host's outcome from its command's state (None: no command yet)."""
    if command_state is None:
        return Outcome.WAITING if rollout_open else Outcome.NOT_STARTED
    try:
        return Outcome(command_state)
    except ValueError:
        return Outcome.FAILED  # a state this dashboard does not know is not a success


class WaveVerdict(StrEnum):
    PENDING = "pending"  # hosts still at work, budget not yet exceeded
    PASSED = "passed"
    OVER_BUDGET = "over_budget"


def wave_verdict(outcomes: Iterable[Outcome], failure_budget: int) -> WaveVerdict:
    """Return whether a wave passed, is still at work, or exceeded the failure budget.

    Exceeding the budget is decided as soon as it happens: waiting for the wave's other
    hosts would not change it, and the next wave must not start either way.
    """
    counts = Counter(outcomes)
    if sum(counts[o] for o in FAILURES) > failure_budget:
        return WaveVerdict.OVER_BUDGET
    if any(counts[o] for o in PENDING):
        return WaveVerdict.PENDING
    return WaveVerdict.PASSED


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    STOPPED = "stopped"  # by the failure budget
    ABORTED = "aborted"


FINAL = frozenset({RolloutState.COMPLETED, RolloutState.STOPPED, RolloutState.ABORTED})
_ALLOWED: dict[RolloutState, frozenset[RolloutState]] = {
    RolloutState.RUNNING: frozenset({RolloutState.PAUSED, *FINAL}),
    # A paused rollout's current wave still finishes: it may exceed its budget, or be the last.
    RolloutState.PAUSED: frozenset({RolloutState.RUNNING, *FINAL}),
}


def can_move(src: RolloutState, dst: RolloutState) -> bool:
    """Return True when a rollout may go from src to dst."""
    return dst in _ALLOWED.get(src, frozenset())


def sources(dst: RolloutState) -> list[RolloutState]:
    """Return the states a rollout may reach dst from (the guard of the UPDATE)."""
    return [s for s in RolloutState if can_move(s, dst)]


_WORDS = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.ROLLED_BACK: "rolled back",
    Outcome.FAILED: "failed",
    Outcome.TIMED_OUT: "timed out",
    Outcome.LOST: "lost",
    Outcome.CANCELLED: "cancelled",
    Outcome.RUNNING: "still running",
    Outcome.DISPATCHED: "still running",
    Outcome.QUEUED: "queued",
    Outcome.WAITING: "waiting",
    Outcome.NOT_STARTED: "not started",
}
_REASONS = {
    RolloutState.STOPPED: "stopped by the failure budget",
    RolloutState.ABORTED: "aborted",
    RolloutState.PAUSED: "paused",
}


def report(outcomes: Iterable[tuple[Outcome, str]], state: RolloutState, reason: str = "") -> str:
    """Return the one-sentence report of a rollout from (outcome, detail) per host.

    "48 succeeded, 1 rolled back (health check web: HTTP 502), 1 failed, 10 not started:
    stopped by the failure budget". A failure's detail is quoted when one host has it.
    """
    counts: Counter[str] = Counter()
    details: dict[str, list[str]] = {}
    for outcome, detail in outcomes:
        word = _WORDS[outcome]
        counts[word] += 1
        if outcome in FAILURES and detail:
            details.setdefault(word, []).append(detail)
    parts = []
    for word in dict.fromkeys(_WORDS.values()):
        if counts[word]:
            only = details.get(word, [])
            quoted = f" ({only[0][:120]})" if counts[word] == 1 and only else ""
            parts.append(f"{counts[word]} {word}{quoted}")
    sentence = ", ".join(parts) or "no hosts"
    why = reason or _REASONS.get(state, "")
    return f"{sentence}: {why}" if why else sentence


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _names(hosts: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(hosts[:most])
    return f"{shown} and {len(hosts) - most} more" if len(hosts) > most else shown


# A kind in the words of the button that starts it, where the two differ.
KIND_WORDS = {"pull-switch": "deploy (pull + switch)", "plan": "preview (plan)"}


def describe_plan(kind: str, waves: Sequence[Sequence[str]], policy: RolloutPolicy) -> str:
    """Return what starting this rollout will do, in words, for the confirmation."""
    total = sum(len(w) for w in waves)
    if not waves:
        return "No host can take part, so nothing will happen."
    parts = [
        f"{KIND_WORDS.get(kind, kind)} on {_count(total, 'host')} in {_count(len(waves), 'wave')}"
    ]
    if len(waves) > 1:
        sizes = sorted({len(w) for w in waves[1:]})
        rest = " or ".join(str(n) for n in sizes)
        parts.append(f"first {_names(list(waves[0]))}, then waves of {rest}")
    text = ": ".join(parts) + "."
    if len(waves) > 1 and policy.pause_s:
        text += f" It waits {policy.pause_s:g} s after each wave that passed."
    if policy.group_by:
        what = (
            f"{policy.group_by.replace('_', ' ')}s"
            if policy.group_by in GROUP_LABELS
            else f"values of the label {policy.group_by}"
        )
        text += f" Waves never mix hosts of two {what}."
    budget = policy.failure_budget
    what = (
        "one host of a wave fails, times out or rolls back"
        if budget == 0
        else f"more than {_count(budget, 'host')} of a wave fail, time out or roll back"
    )
    text += f" It stops as soon as {what}; hosts still queued are then cancelled."
    return text[0].upper() + text[1:]
