"""The shapes of the API's JSON answers, as the published contract declares them.

Declared, not enforced (see `contract.reply`): a route sends its dict as it is, and the
schemathesis run in CI checks each answer against these. Records whose fields belong to
another wing (a host, a command, a rollout) are objects here; their envelopes are exact.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Reply(BaseModel):
    # Only the schema at /api/openapi.json reads these (no route validates or builds one),
    # so pydantic builds each on that first request, not at import: about 25 ms and the
    # validators FastAPI would make for every `responses=` entry at start-up.
    model_config = ConfigDict(defer_build=True)


class AuditEntries(Reply):
    """The audit log's entries, newest first (format=json)."""

    entries: list[dict[str, Any]]


Record = dict[str, Any]  # a host, a command, a rollout: its fields are its wing's


class Health(Reply):
    """The dashboard and its database: ok, or degraded (then 503) and why."""

    status: str = Field(description="ok or degraded")
    database: str = Field(description="ok, unreachable or not writable")
    detail: str | None = None


class HostList(Reply):
    """The hosts asked for, the counts per state and the summary of their plans."""

    hosts: list[Record]
    target: str | None
    counts: dict[str, int]
    plan_summary: str | None


class HostSamples(Reply):
    """The host's load and memory of the last day (5-minute averages)."""

    host_id: str
    samples: list[Record]


class NewHostCode(Reply):
    """The host, and its enrollment code: shown once."""

    host: Record
    enroll_code: str
    enroll_expires_at: float


class EnrollCode(Reply):
    """A new enrollment code for the host: shown once."""

    host_id: str
    enroll_code: str
    enroll_expires_at: float


class AgentToken(Reply):
    """The host's agent token: shown once."""

    host_id: str
    agent_token: str


class Removed(Reply):
    """The host that was removed."""

    removed: str


class Revoked(Reply):
    """The host whose agent token was revoked."""

    revoked: str


class CertBound(Reply):
    """The client certificate the host is bound to now (null: none)."""

    host_id: str
    cert_sha256: str | None


class HostLabels(Reply):
    """The host's labels: in force, set by operators, and where each comes from."""

    host_id: str
    labels: dict[str, str]
    admin_labels: dict[str, str]
    label_sources: dict[str, str]


class HealthGateSet(Reply):
    """The health gate the host's switches carry by default (null: none)."""

    host_id: str
    health_gate: Record | None


class Queued(Reply):
    """The command and its state."""

    command_id: str
    state: str


class BulkResults(Reply):
    """One result per host: its command, or why it was refused (error, detail)."""

    results: list[Record]


class HostCommands(Reply):
    """The host's commands, newest first."""

    commands: list[Record]


class OutputPage(Reply):
    """Output lines after after_seq; `next` is the after_seq of the next page, or null."""

    command_id: str
    lines: list[Record]
    next: int | None


class RolloutList(Reply):
    """The latest rollouts, newest first."""

    rollouts: list[Record]


class RolloutPlan(Reply):
    """What the rollout would do (dry_run): its waves, the hosts left out, in words."""

    kind: str
    policy: Record
    waves: list[Record]
    refused: list[Record]
    summary: str


class UserList(Reply):
    """The users (never a password hash or TOTP secret)."""

    users: list[Record]


class UserAdded(Reply):
    """The new user; with totp, its TOTP secret and URI: shown once."""

    user: Record
    totp_secret: str | None = None
    totp_uri: str | None = None


class OneUser(Reply):
    """The user after the change."""

    user: Record


class Enrolled(Reply):
    """The enrolled host's agent token: shown once."""

    host_id: str
    agent_token: str


class HookResult(Reply):
    """What the delivery led to (accepted, other branch, other event) and why."""

    result: str
    detail: str


class SecuritySummary(Reply):
    """The security panel's data: failures per hour, top addresses, recent events, alerts."""

    generated_at: float
    failures_per_hour: list[Record]
    failures_24h: int
    top_addresses: list[Record]
    recent: list[Record]
    alerts: list[Record]
    alert_history: list[Record]
    channels: list[Record]


class Rollout(Reply):
    """The rollout: its policy, each wave with each host's outcome, counts and the report."""

    id: str
    kind: str
    state: str
    policy: Record
    counts: dict[str, int]
    report: str


class CommandWithOutput(Reply):
    """The command and its first output lines; output_next pages on (…/output)."""

    id: str
    host_id: str
    kind: str
    state: str
    output: list[Record]
    output_next: int | None


class TokenList(Reply):
    """The API tokens the caller may see (never a secret)."""

    tokens: list[Record]


class TokenCreated(Reply):
    """The new token and its secret: shown once."""

    token: Record
    secret: str


class OneToken(Reply):
    """The token after the change (revoked)."""

    token: Record


class HostStates(Reply):
    """The host's state changes (online, deploy state, reboot), newest first."""

    host_id: str
    states: list[Record]
