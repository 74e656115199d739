"""The agent protocol's messages as msgspec Structs: GENERATED, do not edit.

Rendered by `python -m nixfleet.core.wiregen > src/nixfleet/core/wire.py` from the one
definition, the pydantic models of core/protocol.py and core/gates.py; a test fails when
this file differs from what they render. The agent reads and writes these; the dashboard
validates with the models themselves.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct



class TestsCheck(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field='kind', tag='tests'):
    """The host's own `hosts/<host>/tests/T*.sh` scripts (the `test` command's), all passing."""

    name: Annotated[str, Meta(pattern='^[A-Za-z0-9][A-Za-z0-9._-]{0,39}\\Z')] | None = None


class UnitCheck(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field='kind', tag='unit'):
    """A systemd unit is active: `systemctl is-active --quiet UNIT`.

    The agent's `systemctl` option names the program (a stand-in where there is no
    systemd, as in the demo and the tests)."""

    name: Annotated[str, Meta(pattern='^[A-Za-z0-9][A-Za-z0-9._-]{0,39}\\Z')] | None = None
    unit: Annotated[str, Meta(pattern='^[A-Za-z0-9:_.@\\\\-]{1,255}\\Z')]


class TcpCheck(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field='kind', tag='tcp'):
    """A TCP port accepts a connection."""

    name: Annotated[str, Meta(pattern='^[A-Za-z0-9][A-Za-z0-9._-]{0,39}\\Z')] | None = None
    host: Annotated[str, Meta(pattern='^[A-Za-z0-9._:-]{1,253}\\Z')] = '127.0.0.1'
    port: Annotated[int, Meta(ge=1, le=65535)]


class HttpCheck(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag_field='kind', tag='http'):
    """An HTTP(S) URL answers 2xx (redirects are not followed: a 3xx fails)."""

    name: Annotated[str, Meta(pattern='^[A-Za-z0-9][A-Za-z0-9._-]{0,39}\\Z')] | None = None
    url: Annotated[str, Meta(pattern='^https?://[!-~]{1,2040}\\Z')]


class BootFiles(Struct, kw_only=True, frozen=True):
    """What NixOS compares to decide that a reboot is needed: the boot-relevant files."""

    kernel: Annotated[str, Meta(max_length=1024, pattern='^[^\\x00]*\\Z')] = ''
    initrd: Annotated[str, Meta(max_length=1024, pattern='^[^\\x00]*\\Z')] = ''
    kernel_modules: Annotated[str, Meta(max_length=1024, pattern='^[^\\x00]*\\Z')] = ''


class DeployOutcome(Struct, kw_only=True, frozen=True):
    """The agent's own record of its last switch: it survives agent and dashboard restarts."""

    command_id: Annotated[str, Meta(pattern='^[A-Za-z0-9_-]{1,64}\\Z')]
    kind: Annotated[str, Meta(pattern='^[a-z-]{1,20}\\Z')]
    result: Literal['succeeded', 'failed', 'cancelled', 'timed_out', 'rolled_back']
    finished_at: Annotated[float, Meta(ge=0, le=4102444800)]
    detail: Annotated[str, Meta(max_length=2000, pattern='^[^\\x00]*\\Z')] = ''


class Generation(Struct, kw_only=True, frozen=True):
    """One generation of the host's system profile."""

    number: Annotated[int, Meta(ge=0, le=2147483647)]
    created: Annotated[float, Meta(ge=0, le=4102444800)] | None = None
    system: Annotated[str, Meta(max_length=1024, pattern='^[^\\x00]*\\Z')] = ''
    commit: Annotated[str, Meta(pattern='^([0-9a-f]{40}|[0-9a-f]{64})?\\Z')] = ''
    current: bool = False


class HostStatus(Struct, kw_only=True, frozen=True):
    hostname: Annotated[str, Meta(max_length=255, pattern='^[^\\x00]*\\Z')] = ''
    os_kind: Literal['nixos', 'macos', 'unknown'] = 'unknown'
    os_version: Annotated[str, Meta(max_length=64, pattern='^[^\\x00]*\\Z')] = ''
    nixpkgs_version: Annotated[str, Meta(max_length=64, pattern='^[^\\x00]*\\Z')] = ''
    generation: Annotated[int, Meta(ge=0, le=2147483647)] | None = None
    current_system: Annotated[str, Meta(max_length=1024, pattern='^[^\\x00]*\\Z')] = ''
    booted_system: Annotated[str, Meta(max_length=1024, pattern='^[^\\x00]*\\Z')] = ''
    agent_version: Annotated[str, Meta(max_length=64, pattern='^[^\\x00]*\\Z')] = ''
    commit: Annotated[str, Meta(max_length=64, pattern='^[^\\x00]*\\Z')] = ''
    lock_hash: Annotated[str, Meta(max_length=64, pattern='^[^\\x00]*\\Z')] = ''
    # nixpkgs lastModified
    lock_modified: Annotated[int, Meta(ge=0, le=4102444800)] | None = None
    uptime_s: Annotated[float, Meta(ge=0, le=3162240000)] = 0
    load1: Annotated[float, Meta(ge=0, le=1000000000.0)] = 0
    mem_total: Annotated[int, Meta(ge=0, le=9223372036854775807)] = 0
    mem_available: Annotated[int, Meta(ge=0, le=9223372036854775807)] = 0
    current_boot: BootFiles | None = None
    booted_boot: BootFiles | None = None
    kernel: Annotated[str, Meta(max_length=64, pattern='^[^\\x00]*\\Z')] = ''
    deployed_commit: Annotated[str, Meta(pattern='^([0-9a-f]{40}|[0-9a-f]{64})?\\Z')] = ''
    deployed_from: Literal['system', 'agent', ''] = ''
    has_deployed: bool = False
    last_deploy: DeployOutcome | None = None
    generations: Annotated[list[Generation], Meta(max_length=20)] = []


class HostMeta(Struct, kw_only=True, frozen=True):
    """What the host's own configuration (the NixOS module) says about it."""
    # Checked by the dashboard only (core.protocol): _no_reserved.
    location: Annotated[str, Meta(max_length=200)] = ''
    device_type: Annotated[str, Meta(max_length=40)] = ''
    theme_color: Annotated[str, Meta(pattern='^(#[0-9a-fA-F]{6})?\\Z')] = ''
    labels: Annotated[dict[Annotated[str, Meta(pattern='^[a-z0-9]([a-z0-9._-]{0,30}[a-z0-9])?\\Z')], Annotated[str, Meta(pattern='^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?\\Z')]], Meta(max_length=16)] = {}


class TLSFailureReport(Struct, kw_only=True, frozen=True):
    """Handshakes of one kind that failed since the agent's last good connection."""

    kind: Annotated[str, Meta(max_length=40, pattern='^[a-z_]+\\Z')]
    count: Annotated[int, Meta(ge=1, le=2147483648)]
    # seconds since the last one, at hello
    age_s: Annotated[float, Meta(ge=0, le=31622400)]


class TransportReport(Struct, kw_only=True, frozen=True):
    """How the agent got here: the breaker state of this attempt and the outage before it."""

    breaker: Literal['closed', 'open', 'half_open'] = 'closed'
    failed_attempts: Annotated[int, Meta(ge=0, le=2147483648)] = 0
    down_s: Annotated[float, Meta(ge=0, le=31622400)] = 0
    tls_failures: Annotated[list[TLSFailureReport], Meta(max_length=16)] = []


class Hello(Struct, kw_only=True, frozen=True, tag_field='type', tag='hello'):
    protocol: Annotated[int, Meta(ge=0, le=2147483647)]
    host_id: Annotated[str, Meta(max_length=63)]
    agent_version: Annotated[str, Meta(max_length=64, pattern='^[^\\x00]*\\Z')]
    status: HostStatus
    known_commands: Annotated[list[Annotated[str, Meta(pattern='^[A-Za-z0-9_-]{1,64}\\Z')]], Meta(max_length=64)] = []
    meta: HostMeta | None = None
    transport: TransportReport | None = None


class Status(Struct, kw_only=True, frozen=True, tag_field='type', tag='status'):
    status: HostStatus
    ref: Annotated[int, Meta(ge=-9223372036854775807, le=9223372036854775807)] | None = None


class Started(Struct, kw_only=True, frozen=True, tag_field='type', tag='started'):
    command_id: Annotated[str, Meta(pattern='^[A-Za-z0-9_-]{1,64}\\Z')]
    pid: Annotated[int, Meta(ge=0, le=2147483647)] | None = None
    started_at: Annotated[float, Meta(ge=0, le=4102444800)]


class OutputLine(Struct, kw_only=True, frozen=True):
    seq: Annotated[int, Meta(ge=1, le=2147483647)]
    stream: Literal['stdout', 'stderr', 'system'] = 'stdout'
    text: Annotated[str, Meta(max_length=65536, pattern='^[^\\x00]*\\Z')]


class Output(Struct, kw_only=True, frozen=True, tag_field='type', tag='output'):
    command_id: Annotated[str, Meta(pattern='^[A-Za-z0-9_-]{1,64}\\Z')]
    lines: Annotated[list[OutputLine], Meta(max_length=2000)]


class Warning(Struct, kw_only=True, frozen=True, tag_field='type', tag='warning'):
    command_id: Annotated[str, Meta(pattern='^[A-Za-z0-9_-]{1,64}\\Z')]
    text: Annotated[str, Meta(max_length=2000, pattern='^[^\\x00]*\\Z')]


class TestResult(Struct, kw_only=True, frozen=True):
    name: Annotated[str, Meta(max_length=255, pattern='^[^\\x00]*\\Z')]
    ok: bool
    exit_code: Annotated[int, Meta(ge=-2147483648, le=2147483647)]


class PackageChange(Struct, kw_only=True, frozen=True):
    """One line of `nix store diff-closures`: a package added, removed or changed."""

    name: Annotated[str, Meta(max_length=120, pattern='^[^\\x00]*\\Z')]
    before: Annotated[str, Meta(max_length=120, pattern='^[^\\x00]*\\Z')] = ''
    after: Annotated[str, Meta(max_length=120, pattern='^[^\\x00]*\\Z')] = ''
    size_delta: Annotated[int, Meta(ge=-9223372036854775807, le=9223372036854775807)] = 0


class PlanReport(Struct, kw_only=True, frozen=True):
    """What switching to the built target would change on this host (a `plan` command)."""

    target_commit: Annotated[str, Meta(pattern='^([0-9a-f]{40}|[0-9a-f]{64})?\\Z')] = ''
    system: Annotated[str, Meta(max_length=1024, pattern='^[^\\x00]*\\Z')] = ''
    base_system: Annotated[str, Meta(max_length=1024, pattern='^[^\\x00]*\\Z')] = ''
    changed: bool
    changes: Annotated[list[PackageChange], Meta(max_length=500)] = []
    size_delta: Annotated[int, Meta(ge=-9223372036854775807, le=9223372036854775807)] = 0
    reboot: bool | None = None
    reboot_reason: Annotated[str, Meta(max_length=2000, pattern='^[^\\x00]*\\Z')] = ''
    restart: Annotated[list[Annotated[str, Meta(max_length=255, pattern='^[^\\x00]*\\Z')]], Meta(max_length=200)] = []
    start: Annotated[list[Annotated[str, Meta(max_length=255, pattern='^[^\\x00]*\\Z')]], Meta(max_length=200)] = []
    stop: Annotated[list[Annotated[str, Meta(max_length=255, pattern='^[^\\x00]*\\Z')]], Meta(max_length=200)] = []


class SystemPoint(Struct, kw_only=True, frozen=True):
    """Where a host's profile stood: its generation and the commit that built it."""

    generation: Annotated[int, Meta(ge=0, le=2147483647)] | None = None
    commit: Annotated[str, Meta(pattern='^([0-9a-f]{40}|[0-9a-f]{64})?\\Z')] = ''


class Change(Struct, kw_only=True, frozen=True):
    """What a switch or rollback moved the host from and to (from → to in its history)."""

    before: SystemPoint
    after: SystemPoint


class Finished(Struct, kw_only=True, frozen=True, tag_field='type', tag='finished'):
    command_id: Annotated[str, Meta(pattern='^[A-Za-z0-9_-]{1,64}\\Z')]
    result: Literal['succeeded', 'failed', 'cancelled', 'timed_out', 'rolled_back', 'rejected']
    exit_code: Annotated[int, Meta(ge=-2147483648, le=2147483647)] | None
    duration_s: Annotated[float, Meta(ge=0, le=3162240000)]
    last_seq: Annotated[int, Meta(ge=0, le=2147483647)]
    detail: Annotated[str, Meta(max_length=2000, pattern='^[^\\x00]*\\Z')] = ''
    tests: Annotated[list[TestResult], Meta(max_length=1000)] = []
    plan: PlanReport | None = None
    change: Change | None = None


class CredentialSaved(Struct, kw_only=True, frozen=True, tag_field='type', tag='credential_saved'):
    """The agent stored the per-host token of a `credential` message and will use it."""


class Welcome(Struct, kw_only=True, frozen=True, tag_field='type', tag='welcome'):
    protocol: int = 1
    heartbeat_s: Annotated[float, Meta(ge=-1.7976931348623157e+308, le=1.7976931348623157e+308)]
    branch: str


class HealthGate(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a switch must show within deadline_s of its activation, or be rolled back."""

    deadline_s: Annotated[float, Meta(ge=1, le=3600)] = 120
    confirm: bool = True
    checks: Annotated[list[TestsCheck | UnitCheck | TcpCheck | HttpCheck], Meta(max_length=16)] = []


class Command(Struct, kw_only=True, frozen=True, tag_field='type', tag='command'):
    command_id: str
    kind: str
    expires_at: Annotated[float, Meta(ge=-1.7976931348623157e+308, le=1.7976931348623157e+308)] | None = None
    gate: HealthGate | None = None
    generation: Annotated[int, Meta(ge=0, le=2147483647)] | None = None


class Cancel(Struct, kw_only=True, frozen=True, tag_field='type', tag='cancel'):
    command_id: str


class Ack(Struct, kw_only=True, frozen=True, tag_field='type', tag='ack'):
    command_id: str
    seq: int
    final: bool = False


class StatusAck(Struct, kw_only=True, frozen=True, tag_field='type', tag='status_ack'):
    ref: int | None = None


class Credential(Struct, kw_only=True, frozen=True, tag_field='type', tag='credential'):
    """A per-host token for an agent that connected with the deprecated shared token.

    Sent once, right after `welcome`; it becomes valid only when the agent answers
    `credential_saved`, so a connection lost in between leaves the host migratable."""

    token: str

    def __repr__(self) -> str:  # token: a secret, never shown
        return "Credential()"


Check = TestsCheck | UnitCheck | TcpCheck | HttpCheck


AgentMessage = Hello | Status | Started | Output | Warning | Finished | CredentialSaved


DashboardMessage = Welcome | Command | Cancel | Ack | StatusAck | Credential
