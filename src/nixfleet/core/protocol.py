"""The agent protocol: JSON messages over the WebSocket, versioned.

Both sides import these classes, so a field renamed here is renamed everywhere.
Output lines carry a per-command sequence number; the dashboard acknowledges the highest
sequence it has stored and the agent drops lines only then, so nothing is lost on a drop.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1

# WebSocket close codes (4000-4999 are for applications).
CLOSE_BAD_TOKEN = 4401
CLOSE_PROTOCOL_TOO_OLD = 4426
CLOSE_BAD_MESSAGE = 4400
CLOSE_REPLACED = 4409
CLOSE_HOST_REMOVED = 4404
# The credential a live connection was opened with stopped being valid; the reason is the code.
CLOSE_TOKEN_REVOKED = 4403
CLOSE_TOKEN_ROTATED = 4410
# Refusals of who the agent is: retrying soon with the same credential cannot help, so the
# agent backs off harder.
AUTH_CLOSE_CODES = frozenset(
    {CLOSE_BAD_TOKEN, CLOSE_HOST_REMOVED, CLOSE_TOKEN_REVOKED, CLOSE_TOKEN_ROTATED}
)


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


_STORE_PATH = 400  # /nix/store/<32>-<name>/<file>: names are at most 211 characters
_COMMIT = r"^([0-9a-f]{40}|[0-9a-f]{64})?$"


class BootFiles(_Msg):
    """What NixOS compares to decide that a reboot is needed: the boot-relevant files."""

    kernel: str = Field("", max_length=_STORE_PATH)
    initrd: str = Field("", max_length=_STORE_PATH)
    kernel_modules: str = Field("", max_length=_STORE_PATH)


class DeployOutcome(_Msg):
    """The agent's own record of its last switch: it survives agent and dashboard restarts."""

    command_id: str = Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    kind: str = Field(max_length=20, pattern=r"^[a-z-]+$")
    result: Literal["succeeded", "failed", "cancelled", "timed_out"]
    finished_at: float = Field(ge=0, le=2**40)
    detail: str = Field("", max_length=500)


class HostStatus(_Msg):
    hostname: str = ""
    os_kind: Literal["nixos", "macos", "unknown"] = "unknown"
    os_version: str = ""
    nixpkgs_version: str = ""
    generation: int | None = None
    current_system: str = ""
    booted_system: str = ""
    agent_version: str = ""
    commit: str = ""
    lock_hash: str = ""
    lock_modified: int | None = Field(None, description="nixpkgs lastModified in flake.lock")
    uptime_s: float = 0
    load1: float = 0
    mem_total: int = 0
    mem_available: int = 0
    # Reboot: the boot files of both systems (None: not applicable, as on macOS).
    current_boot: BootFiles | None = None
    booted_boot: BootFiles | None = None
    kernel: str = Field("", max_length=64)
    # The commit the running system was built from, and how that is known: "system" (its
    # configuration revision) or "agent" (the agent's record of the switch it ran).
    deployed_commit: str = Field("", pattern=_COMMIT)
    deployed_from: Literal["system", "agent", ""] = ""
    # True once this agent has completed a switch: "never deployed" versus "unknown".
    has_deployed: bool = False
    last_deploy: DeployOutcome | None = None


class HostMeta(_Msg):
    """What the host's own configuration (the NixOS module) says about it."""

    location: str = Field("", max_length=200)
    device_type: str = Field("", max_length=40)
    theme_color: str = Field("", pattern=r"^(#[0-9a-fA-F]{6})?$")


class OutputLine(_Msg):
    seq: int = Field(ge=1)
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    text: str = Field(max_length=65536)


_Unit = Annotated[str, Field(max_length=200)]


class PackageChange(_Msg):
    """One line of `nix store diff-closures`: a package added, removed or changed."""

    name: str = Field(max_length=120)
    before: str = Field("", max_length=120, description="versions before; empty: added")
    after: str = Field("", max_length=120, description="versions after; empty: removed")
    size_delta: int = Field(0, ge=-(2**50), le=2**50)


class PlanReport(_Msg):
    """What switching to the built target would change on this host (a `plan` command)."""

    target_commit: str = Field("", pattern=_COMMIT)
    system: str = Field("", max_length=_STORE_PATH)
    base_system: str = Field("", max_length=_STORE_PATH, description="what it was compared with")
    changed: bool
    changes: list[PackageChange] = Field(default_factory=list, max_length=500)
    size_delta: int = Field(0, ge=-(2**50), le=2**50)
    reboot: bool | None = None
    reboot_reason: str = Field("", max_length=200)
    restart: list[_Unit] = Field(default_factory=list, max_length=200)
    start: list[_Unit] = Field(default_factory=list, max_length=200)
    stop: list[_Unit] = Field(default_factory=list, max_length=200)


class TestResult(_Msg):
    name: str
    ok: bool
    exit_code: int


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


# agent → dashboard
class Hello(_Msg):
    type: Literal["hello"] = "hello"
    protocol: int
    host_id: str
    agent_version: str
    status: HostStatus
    known_commands: list[str] = Field(default_factory=list, max_length=64)
    meta: HostMeta | None = None
    transport: TransportReport | None = None  # absent from agents before issue 5


class Status(_Msg):
    type: Literal["status"] = "status"
    status: HostStatus
    ref: int | None = None


class Started(_Msg):
    type: Literal["started"] = "started"
    command_id: str
    pid: int | None = None
    started_at: float


class Output(_Msg):
    type: Literal["output"] = "output"
    command_id: str
    lines: list[OutputLine] = Field(max_length=2000)


class Warning(_Msg):
    type: Literal["warning"] = "warning"
    command_id: str
    text: str


class Finished(_Msg):
    type: Literal["finished"] = "finished"
    command_id: str
    result: Literal["succeeded", "failed", "cancelled", "timed_out", "rejected"]
    exit_code: int | None
    duration_s: float
    last_seq: int
    detail: str = ""
    tests: list[TestResult] = Field(default_factory=list)
    plan: PlanReport | None = None


class CredentialSaved(_Msg):
    """The agent stored the per-host token of a `credential` message and will use it."""

    type: Literal["credential_saved"] = "credential_saved"


AgentMessage = Annotated[
    Hello | Status | Started | Output | Warning | Finished | CredentialSaved,
    Field(discriminator="type"),
]
agent_message = TypeAdapter(AgentMessage)


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
dashboard_message = TypeAdapter(DashboardMessage)
