"""The agent protocol: JSON messages over the WebSocket, versioned.

Both sides import these classes, so a field renamed here is renamed everywhere.
Output lines carry a per-command sequence number; the dashboard acknowledges the highest
sequence it has stored and the agent drops lines only then, so nothing is lost on a drop.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from nixfleet.core import labels as label_rules
from nixfleet.core.framing import (
    INT32_MAX,
    INT64_MAX,
    LINE_MAX_CHARS,
    MAX_GENERATIONS,
    PROTOCOL_VERSION,
    TIMESTAMP_MAX,
)
from nixfleet.core.gates import HealthGate
from nixfleet.core.labels import KEY_PATTERN, MAX_LABELS, VALUE_PATTERN

# Every field an agent sends is one of the bounded types below: floats are finite (the
# model config refuses NaN and ±Infinity), strings have a length and no NUL (PostgreSQL
# cannot store one). A new field picks the type that says what it is. The numbers are
# core.framing's, which the agent's Structs (core/wire.py, generated from these models)
# share.
_NO_NUL = r"^[^\x00]*$"

Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
Count32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
Count64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
Seq = Annotated[int, Field(ge=0, le=INT32_MAX)]
UnixTime = Annotated[float, Field(ge=0, le=TIMESTAMP_MAX)]
UnixSeconds = Annotated[int, Field(ge=0, le=TIMESTAMP_MAX)]
Duration = Annotated[float, Field(ge=0, le=100 * 366 * 86400)]
Gauge = Annotated[float, Field(ge=0, le=1e9)]
CommandId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Word = Annotated[str, StringConstraints(max_length=64, pattern=_NO_NUL)]
Name = Annotated[str, StringConstraints(max_length=255, pattern=_NO_NUL)]
StorePath = Annotated[str, StringConstraints(max_length=1024, pattern=_NO_NUL)]
Detail = Annotated[str, StringConstraints(max_length=2000, pattern=_NO_NUL)]
LineText = Annotated[str, StringConstraints(max_length=LINE_MAX_CHARS, pattern=_NO_NUL)]
LabelKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(pattern=VALUE_PATTERN)]


class _Msg(BaseModel):
    # strict: a string is not a number and a float is not an integer; no NaN or Infinity.
    # defer_build: the dashboard validates one direction only (agent_message), so each
    # model and union is built on its first use, not at import (docs/benchmarks.md).
    model_config = ConfigDict(
        extra="ignore", frozen=True, strict=True, allow_inf_nan=False, defer_build=True
    )


# A git commit (SHA-1 or SHA-256), or "" for none.
CommitId = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{40}|[0-9a-f]{64})?$")]
Unit = Annotated[str, StringConstraints(max_length=255, pattern=_NO_NUL)]
SizeDelta = Annotated[int, Field(ge=-INT64_MAX, le=INT64_MAX)]


class BootFiles(_Msg):
    """What NixOS compares to decide that a reboot is needed: the boot-relevant files."""

    kernel: StorePath = ""
    initrd: StorePath = ""
    kernel_modules: StorePath = ""


class DeployOutcome(_Msg):
    """The agent's own record of its last switch: it survives agent and dashboard restarts."""

    command_id: CommandId
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z-]{1,20}$")]
    result: Literal["succeeded", "failed", "cancelled", "timed_out", "rolled_back"]
    finished_at: UnixTime
    detail: Detail = ""


class Generation(_Msg):
    """One generation of the host's system profile."""

    number: Count32
    created: UnixTime | None = None
    system: StorePath = ""
    commit: CommitId = ""
    current: bool = False


class HostStatus(_Msg):
    hostname: Name = ""
    os_kind: Literal["nixos", "macos", "unknown"] = "unknown"
    os_version: Word = ""
    nixpkgs_version: Word = ""
    generation: Count32 | None = None
    current_system: StorePath = ""
    booted_system: StorePath = ""
    agent_version: Word = ""
    commit: Word = ""
    lock_hash: Word = ""
    lock_modified: UnixSeconds | None = Field(None, description="nixpkgs lastModified")
    uptime_s: Duration = 0
    load1: Gauge = 0
    mem_total: Count64 = 0
    mem_available: Count64 = 0
    # Reboot: the boot files of both systems (None: not applicable, as on macOS).
    current_boot: BootFiles | None = None
    booted_boot: BootFiles | None = None
    kernel: Word = ""
    # The commit the running system was built from, and how that is known: "system" (its
    # configuration revision) or "agent" (the agent's record of the switch it ran).
    deployed_commit: CommitId = ""
    deployed_from: Literal["system", "agent", ""] = ""
    # True once this agent has completed a switch: "never deployed" versus "unknown".
    has_deployed: bool = False
    last_deploy: DeployOutcome | None = None
    generations: list[Generation] = Field(default_factory=list, max_length=MAX_GENERATIONS)


class HostMeta(_Msg):
    """What the host's own configuration (the NixOS module) says about it."""

    location: str = Field("", max_length=200)
    device_type: str = Field("", max_length=40)
    theme_color: str = Field("", pattern=r"^(#[0-9a-fA-F]{6})?$")
    # The labels the host's configuration sets; they win over the operator's (core.labels).
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)

    @field_validator("labels")
    @classmethod
    def _no_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key in label_rules.RESERVED:
                raise ValueError(f"{key!r} is a host field of its own, not a label")
        return value


class OutputLine(_Msg):
    # Lines count from 1. Not `Seq = Field(ge=1)`: pydantic applies the type's own ge=0 after
    # the field's, so 0 passed (tests/core/test_wire_protocol.py found it).
    seq: Annotated[int, Field(ge=1, le=INT32_MAX)]
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    text: LineText


class PackageChange(_Msg):
    """One line of `nix store diff-closures`: a package added, removed or changed."""

    name: Annotated[str, StringConstraints(max_length=120, pattern=_NO_NUL)]
    before: Annotated[str, StringConstraints(max_length=120, pattern=_NO_NUL)] = ""  # "": added
    after: Annotated[str, StringConstraints(max_length=120, pattern=_NO_NUL)] = ""  # "": removed
    size_delta: SizeDelta = 0


class PlanReport(_Msg):
    """What switching to the built target would change on this host (a `plan` command)."""

    target_commit: CommitId = ""
    system: StorePath = ""
    base_system: StorePath = ""  # the running system it was compared with
    changed: bool
    changes: list[PackageChange] = Field(default_factory=list, max_length=500)
    size_delta: SizeDelta = 0
    reboot: bool | None = None
    reboot_reason: Detail = ""
    restart: list[Unit] = Field(default_factory=list, max_length=200)
    start: list[Unit] = Field(default_factory=list, max_length=200)
    stop: list[Unit] = Field(default_factory=list, max_length=200)


class SystemPoint(_Msg):
    """Where a host's profile stood: its generation and the commit that built it."""

    generation: Count32 | None = None
    commit: CommitId = ""


class Change(_Msg):
    """What a switch or rollback moved the host from and to (from → to in its history)."""

    before: SystemPoint
    after: SystemPoint


class TestResult(_Msg):
    name: Name
    ok: bool
    exit_code: Int32


_YEAR_S = 366 * 86400


class TLSFailureReport(_Msg):
    """Handshakes of one kind that failed since the agent's last good connection."""

    kind: str = Field(max_length=40, pattern=r"^[a-z_]+$")
    count: int = Field(ge=1, le=2**31)
    age_s: float = Field(ge=0, le=_YEAR_S, description="seconds since the last one, at hello")


class TransportReport(_Msg):
    """How the agent got here: the breaker state of this attempt and the outage before it."""

    breaker: Literal["closed", "open", "half_open"] = "closed"
    failed_attempts: int = Field(0, ge=0, le=2**31)
    down_s: float = Field(0, ge=0, le=_YEAR_S)
    tls_failures: list[TLSFailureReport] = Field(default_factory=list, max_length=16)


_M = TypeVar("_M", bound=_Msg)


def salvage(model: type[_M], raw: object) -> _M:
    """Return raw as a model, each field that fails today's bounds reset to its default.

    For data stored before a bound existed (or collected from a host's odd files): one bad
    field must not hide the others, nor break every reader of the row. The model's fields
    must all have defaults.
    """
    if not isinstance(raw, dict):
        return model()
    try:
        return model.model_validate(raw)  # the common case: one validation
    except ValidationError:
        pass
    kept: dict[str, Any] = {}
    for name in model.model_fields:
        if name not in raw:
            continue
        try:
            model.model_validate({name: raw[name]})
        except ValidationError:
            continue
        kept[name] = raw[name]
    return model.model_validate(kept)


# agent → dashboard
class Hello(_Msg):
    type: Literal["hello"] = "hello"
    protocol: Count32
    host_id: Annotated[str, StringConstraints(max_length=63)]
    agent_version: Word
    status: HostStatus
    known_commands: list[CommandId] = Field(default_factory=list, max_length=64)
    meta: HostMeta | None = None
    transport: TransportReport | None = None  # absent from agents before issue 5


class Status(_Msg):
    type: Literal["status"] = "status"
    status: HostStatus
    ref: Annotated[int, Field(ge=-INT64_MAX, le=INT64_MAX)] | None = None


class Started(_Msg):
    type: Literal["started"] = "started"
    command_id: CommandId
    pid: Count32 | None = None
    started_at: UnixTime


class Output(_Msg):
    type: Literal["output"] = "output"
    command_id: CommandId
    lines: list[OutputLine] = Field(max_length=2000)


class Warning(_Msg):
    type: Literal["warning"] = "warning"
    command_id: CommandId
    text: Detail


class Finished(_Msg):
    type: Literal["finished"] = "finished"
    command_id: CommandId
    # rolled_back: a gated switch's health gate failed and the runner went back by itself.
    result: Literal["succeeded", "failed", "cancelled", "timed_out", "rolled_back", "rejected"]
    exit_code: Int32 | None
    duration_s: Duration
    last_seq: Seq
    detail: Detail = ""
    tests: list[TestResult] = Field(default_factory=list, max_length=1000)
    plan: PlanReport | None = None
    # A switch's or rollback's generation and commit before and after (absent from older agents).
    change: Change | None = None


class CredentialSaved(_Msg):
    """The agent stored the per-host token of a `credential` message and will use it."""

    type: Literal["credential_saved"] = "credential_saved"


AgentMessage = Annotated[
    Hello | Status | Started | Output | Warning | Finished | CredentialSaved,
    Field(discriminator="type"),
]
agent_message = TypeAdapter(AgentMessage, config=ConfigDict(defer_build=True))


# dashboard → agent
class Welcome(_Msg):
    type: Literal["welcome"] = "welcome"
    protocol: int = PROTOCOL_VERSION
    heartbeat_s: float
    branch: str


class Command(_Msg):
    type: Literal["command"] = "command"
    command_id: str
    kind: str
    expires_at: float | None = None
    # A switch's health gate (core.gates); an agent before it ignores the field.
    gate: HealthGate | None = None
    # A rollback's chosen generation (None: the previous one); checked against the
    # host's reported generations before it is queued.
    generation: Count32 | None = None


class Cancel(_Msg):
    type: Literal["cancel"] = "cancel"
    command_id: str


class Ack(_Msg):
    type: Literal["ack"] = "ack"
    command_id: str
    seq: int
    final: bool = False


class StatusAck(_Msg):
    type: Literal["status_ack"] = "status_ack"
    ref: int | None = None


class Credential(_Msg):
    """A per-host token for an agent that connected with the deprecated shared token.

    Sent once, right after `welcome`; it becomes valid only when the agent answers
    `credential_saved`, so a connection lost in between leaves the host migratable.
    """

    type: Literal["credential"] = "credential"
    token: str = Field(repr=False)


DashboardMessage = Annotated[
    Welcome | Command | Cancel | Ack | StatusAck | Credential, Field(discriminator="type")
]
dashboard_message = TypeAdapter(DashboardMessage, config=ConfigDict(defer_build=True))
