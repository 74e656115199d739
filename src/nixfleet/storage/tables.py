"""The schema, in SQLAlchemy Core. Alembic migrations are the source of truth on disk;
this module mirrors them for queries."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

hosts = Table(
    "hosts",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("token_hash", String(64), nullable=True),
    Column("location", String(200), nullable=False, server_default=""),
    Column("device_type", String(40), nullable=False, server_default=""),
    Column("theme_color", String(20), nullable=False, server_default=""),
    Column("status", JSON, nullable=True),
    Column("online", Boolean, nullable=False, server_default="0"),
    Column("connected_at", Float, nullable=True),
    Column("last_seen", Float, nullable=True),
    Column("last_test", JSON, nullable=True),
    # {"reconnects": [ts, …last hour], "breaker": {…}, "tls_failure": {…}} (migration 0004)
    Column("connection", JSON, nullable=True),
    # none: never had a token (enrollment pending); active; revoked: only a new token helps.
    Column("identity_state", String(12), nullable=False, server_default="none"),
    Column("token_used_at", Float, nullable=True),
    Column("token_used_from", String(64), nullable=True),
    Column("cert_sha256", String(64), nullable=True),
    # The replica holding the host's agent connection (NULL: none); see storage/replicas.py.
    Column("replica", String(64), nullable=True),
    # The last switch's outcome and the latest plan's report (migration 0010).
    Column("last_deploy", JSON, nullable=True),
    Column("plan", JSON, nullable=True),
    # The host's default health gate for switches (core.gates; migration 0013).
    Column("health_gate", JSON, nullable=True),
    # {key: value} set by an operator, and by the host's configuration (migration 0015).
    Column("labels", JSON, nullable=True),
    Column("host_labels", JSON, nullable=True),
    Index("ix_hosts_token_hash", "token_hash", unique=True),
    Index("ix_hosts_replica", "replica"),
)

commands = Table(
    "commands",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("host_id", String(63), ForeignKey("hosts.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("state", String(20), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("dispatched_at", Float, nullable=True),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("disconnected_at", Float, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("detail", Text, nullable=False, server_default=""),
    Column("warned", Boolean, nullable=False, server_default="0"),
    Column("tests", JSON, nullable=True),
    # The output quota (NIXFLEET_OUTPUT_MAX_BYTES) and retention (migration 0010).
    Column("output_bytes", BigInteger, nullable=False, server_default="0"),
    Column("output_truncated", Boolean, nullable=False, server_default="0"),
    Column("output_pruned", Boolean, nullable=False, server_default="0"),
    # A rollback's chosen generation (NULL: the previous one) and, once a switch or a
    # rollback finished, {"before": {generation, commit}, "after": {…}} (migration 0019).
    Column("generation", Integer, nullable=True),
    Column("change", JSON, nullable=True),
    # A switch's health gate as sent to the agent (core.gates; migration 0013).
    Column("gate", JSON, nullable=True),
    Index("ix_commands_host_created", "host_id", "created_at"),
    Index("ix_commands_state", "state"),
    Index("ix_commands_finished", "finished_at"),
)

# Each host's state changes over time (online, deploy state, reboot), a bounded number
# per host and pruned by age (storage/host_states.py; migration 0019).
host_states = Table(
    "host_states",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host_id", String(63), ForeignKey("hosts.id", ondelete="CASCADE"), nullable=False),
    Column("at", Float, nullable=False),
    Column("field", String(20), nullable=False),
    Column("value", String(40), nullable=False),
    Column("detail", String(200), nullable=False, server_default=""),
    Index("ix_host_states_host_at", "host_id", "at"),
    Index("ix_host_states_at", "at"),
)

output = Table(
    "output",
    metadata,
    Column(
        "command_id",
        String(32),
        ForeignKey("commands.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True),
    Column("stream", String(8), nullable=False),
    Column("text", Text, nullable=False),
    Column("ts", Float, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("username", String(100), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("address", String(64), nullable=False, server_default=""),
)

# Tokens that no longer authenticate (or do until valid_until: a rotation's overlap), kept
# so a refusal can say why (rotated or revoked) rather than just "unknown token".
retired_tokens = Table(
    "retired_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("host_id", String(63), ForeignKey("hosts.id", ondelete="CASCADE"), nullable=False),
    Column("reason", String(12), nullable=False),
    Column("retired_at", Float, nullable=False),
    Column("valid_until", Float, nullable=True),
)

enroll_codes = Table(
    "enroll_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("host_id", String(63), ForeignKey("hosts.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
    Column("used_from", String(64), nullable=True),
    Index("ix_enroll_codes_host", "host_id"),
)

totp_steps = Table(
    "totp_steps",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("last_step", BigInteger, nullable=False),
)

security_events = Table(
    "security_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", String(64), nullable=False, server_default=""),
    Column("address", String(64), nullable=False, server_default=""),
    Column("user", String(100), nullable=False, server_default=""),
    Column("host", String(63), nullable=False, server_default=""),
    Index("ix_security_events_at", "at"),
    Index("ix_security_events_kind_at", "kind", "at"),
)

# Tamper-evident: hash = sha256(prev_hash + canonical JSON of the row). prev_hash is
# unique, so two writers (replicas) that read the same head cannot both append after it.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", Float, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(40), nullable=False),
    Column("host", String(63), nullable=False, server_default=""),
    Column("address", String(64), nullable=False, server_default=""),
    Column("result", String(40), nullable=False),
    Column("detail", JSON, nullable=True),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
    # HMAC of hash under the audit key (outside the database); NULL before migration 0007.
    Column("mac", String(64), nullable=True),
    Index("ix_audit_log_at", "at"),
)

# A rollout: one kind for many hosts in waves (core.rollouts). `wave` is the index of the
# wave whose commands exist (-1 before the first); moving it is the guard that makes a
# wave start exactly once, even across replicas and restarts (migration 0008).
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("actor", String(100), nullable=False),
    Column("source", String(80), nullable=False, server_default=""),
    Column("kind", String(20), nullable=False),
    Column("target", String(64), nullable=True),
    Column("policy", JSON, nullable=False),
    Column("state", String(12), nullable=False),
    Column("wave", Integer, nullable=False),
    Column("waves", Integer, nullable=False),
    Column("next_wave_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("reason", String(200), nullable=False, server_default=""),
    Column("report", Text, nullable=False, server_default=""),
    Index("ix_rollouts_state", "state"),
    Index("ix_rollouts_created", "created_at"),
)

# No foreign key to hosts or commands: a removed host's outcome stays in the rollout's record.
rollout_hosts = Table(
    "rollout_hosts",
    metadata,
    Column(
        "rollout_id", String(32), ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("host_id", String(63), primary_key=True),
    Column("wave", Integer, nullable=False),
    Column("command_id", String(32), nullable=True),
    Index("ix_rollout_hosts_wave", "rollout_id", "wave"),
    Index("ix_rollout_hosts_command", "command_id"),
)

# What replicas announce to each other (storage/pgbus.py): small references to table rows,
# kept a few minutes so a replica that lost its PostgreSQL connection can catch up.
bus_events = Table(
    "bus_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", Float, nullable=False),
    Column("origin", String(64), nullable=False),
    Column("event", JSON, nullable=False),
    Index("ix_bus_events_at", "at"),
)

# Dashboard processes sharing the database, each with a lease it renews (storage/replicas.py).
replicas = Table(
    "replicas",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("renewed_at", Float, nullable=False),
    Column("lease_until", Float, nullable=False),
)

# Forge push deliveries seen (migration 0011). A GitHub or Forgejo signature covers the
# body only, not the delivery header: the body's digest is unique too, so a captured
# request replayed under a new delivery id is refused as well.
hook_deliveries = Table(
    "hook_deliveries",
    metadata,
    Column("forge", String(12), primary_key=True),
    Column("delivery", String(100), primary_key=True),
    Column("body_sha256", String(64), nullable=False, unique=True),
    Column("received_at", Float, nullable=False),
    Index("ix_hook_deliveries_received", "received_at"),
)

# People who log in. The env-configured admin becomes the first row at first start
# (storage/users.py `seed_admin`); after that the table is the truth.
users = Table(
    "users",
    metadata,
    Column("username", String(63), primary_key=True),
    Column("password_hash", String(200), nullable=False),
    # Base32; the code check needs the secret itself, so it cannot be hashed.
    Column("totp_secret", String(64), nullable=True),
    Column("role", String(10), nullable=False),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # "local" (a password) or "oidc" (single sign-on: no password, the provider's subject).
    Column("source", String(10), nullable=False, server_default="local"),
    Column("subject", String(255), nullable=True),
)

# Single sign-ons under way: one row per state, taken (deleted) by the callback that uses it.
oidc_logins = Table(
    "oidc_logins",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("nonce", String(64), nullable=False),
    Column("verifier", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_oidc_logins_created", "created_at"),
)

# Request-rate counters shared by the replicas (migration 0014; UNLOGGED on PostgreSQL):
# one row per limit, address and window, pruned once both its windows are over.
rate_counts = Table(
    "rate_counts",
    metadata,
    Column("key", String(160), primary_key=True),
    Column("win", BigInteger, primary_key=True),
    Column("hits", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_rate_counts_expires", "expires_at"),
)

# One row per open browser event stream on any replica, with the lease of the replica
# serving it: a replica that dies stops renewing, and its streams stop counting.
stream_seats = Table(
    "stream_seats",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("replica", String(64), nullable=False),
    Column("session", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("lease_until", Float, nullable=False),
    Index("ix_stream_seats_replica", "replica"),
)

# How many changes of each kind were made (storage/changes.py, migration 0016): a dashboard
# re-checks live agent credentials, or rescans hosts, only when its counter moved.
change_counters = Table(
    "change_counters",
    metadata,
    Column("name", String(20), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# API tokens (migration 0018). Only the HMAC of a token is kept; it is also the lookup key.
# owner NULL: a service token, managed by admins. scope: core.apitokens.TokenScope.stored.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(40), nullable=False),
    Column("owner", String(63), nullable=True),
    Column("created_by", String(100), nullable=False),
    Column("role", String(10), nullable=False),
    Column("scope", JSON, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
    Column("last_used_from", String(64), nullable=True),
    Index("ix_api_tokens_owner", "owner"),
)
