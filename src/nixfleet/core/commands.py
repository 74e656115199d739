"""Command kinds, the command state machine and the rules for queueing."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nixfleet.core.errors import Conflict, UnknownCommandKind, ValidationError


class CommandKind(StrEnum):
    PULL = "pull"
    SWITCH = "switch"
    PULL_SWITCH = "pull-switch"
    TEST = "test"
    PLAN = "plan"
    # Back to the previous generation (`nixos-rebuild switch --rollback` and its peers).
    ROLLBACK = "rollback"
    STOP = "stop"
    RESTART = "restart"


class CommandState(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    # A gated switch whose health gate failed: the runner went back to the previous
    # generation by itself (core.gates); the detail says why.
    ROLLED_BACK = "rolled_back"


FINAL_STATES = frozenset(
    {
        CommandState.SUCCEEDED,
        CommandState.FAILED,
        CommandState.CANCELLED,
        CommandState.TIMED_OUT,
        CommandState.LOST,
        CommandState.ROLLED_BACK,
    }
)
ACTIVE_STATES = frozenset({CommandState.DISPATCHED, CommandState.RUNNING})
# A command is born queued; a stop, which is never queued, is born succeeded.
INITIAL_STATES = frozenset({CommandState.QUEUED, CommandState.SUCCEEDED})

_ALLOWED: dict[CommandState, frozenset[CommandState]] = {
    CommandState.QUEUED: frozenset(
        {CommandState.DISPATCHED, CommandState.CANCELLED, CommandState.TIMED_OUT}
    ),
    # dispatched → queued: the agent never received it (connection dropped), send again.
    CommandState.DISPATCHED: frozenset({CommandState.QUEUED, CommandState.RUNNING, *FINAL_STATES}),
    CommandState.RUNNING: FINAL_STATES,
    # `lost` is a verdict on silence: an agent that comes back with the true result wins.
    CommandState.LOST: frozenset(
        {
            CommandState.SUCCEEDED,
            CommandState.FAILED,
            CommandState.CANCELLED,
            CommandState.TIMED_OUT,
            CommandState.ROLLED_BACK,
        }
    ),
}


def can_move(src: CommandState, dst: CommandState) -> bool:
    """Return True when a command may go from src to dst."""
    return dst in _ALLOWED.get(src, frozenset())


@dataclass(frozen=True)
class KindRules:
    """How a kind runs: whether it is queued as work, and its two-stage timeout."""

    runs_process: bool
    warn_after_s: float
    kill_after_s: float


KIND_RULES: dict[CommandKind, KindRules] = {
    CommandKind.PULL: KindRules(True, 60, 300),
    CommandKind.SWITCH: KindRules(True, 900, 3600),
    CommandKind.PULL_SWITCH: KindRules(True, 900, 3600),
    CommandKind.TEST: KindRules(True, 300, 900),
    # A plan builds the target like a switch does, without activating it.
    CommandKind.PLAN: KindRules(True, 900, 3600),
    CommandKind.ROLLBACK: KindRules(True, 300, 900),
    # stop and restart act on the agent itself: they are never queued behind other work.
    CommandKind.STOP: KindRules(False, 10, 30),
    CommandKind.RESTART: KindRules(False, 10, 30),
}


def parse_timeout(spec: str) -> tuple[CommandKind, KindRules]:
    """Return the kind and rules of a "KIND=WARN:KILL" override (seconds), or raise.

    The warning must come before the hard limit, and only process-running kinds have one.
    """
    kind_text, _, limits = spec.partition("=")
    kind = parse_kind(kind_text.strip())
    warn_text, _, kill_text = limits.partition(":")
    try:
        warn, kill = float(warn_text), float(kill_text)
    except ValueError:
        raise ValidationError(
            f"timeout {spec!r} is not KIND=WARN:KILL in seconds, e.g. switch=900:3600"
        ) from None
    if not (0 < warn < kill) or not KIND_RULES[kind].runs_process:
        raise ValidationError(
            f"timeout {spec!r}: need 0 < WARN < KILL on a pull/switch/test/plan kind"
        )
    return kind, KindRules(True, warn, kill)


# A rollback replaces a queued switch too: the operator wants the host back, not forward.
SUPERSEDING = frozenset({CommandKind.SWITCH, CommandKind.PULL_SWITCH, CommandKind.ROLLBACK})
# Commands that activate a system: their outcome is the host's "last deploy".
DEPLOYING = frozenset({CommandKind.SWITCH, CommandKind.PULL_SWITCH})
# Kinds that may carry a health gate: the ones that activate a new generation.
GATED = DEPLOYING
# Commands that may change the running system: until one has ended and the host reported
# after it, its deploy state is in between (the host page's timeline waits for the outcome).
ACTIVATING = frozenset({CommandKind.SWITCH, CommandKind.PULL_SWITCH, CommandKind.ROLLBACK})


def parse_kind(raw: object) -> CommandKind:
    """Return the CommandKind named by raw or raise UnknownCommandKind listing the valid ones."""
    try:
        return CommandKind(str(raw))
    except ValueError:
        valid = ", ".join(k.value for k in CommandKind)
        raise UnknownCommandKind(f"unknown command {str(raw)[:40]!r}; accepted: {valid}") from None


def supersedes_queued(new: CommandKind) -> bool:
    """Return True when queueing `new` cancels the host's queued switch-like commands.

    A newer switch makes an older queued switch pointless: the host would build twice.
    """
    return new in SUPERSEDING


def check_stop_allowed(has_active: bool) -> None:
    """Raise Conflict when a stop has nothing to stop."""
    if not has_active:
        raise Conflict("commands: nothing is running on this host, so there is nothing to stop")
