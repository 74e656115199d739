"""Security events: the names every part uses when it reports something worth watching.

Producers (login, CSRF check, agent handshake, rate limits, token changes) emit one
SecurityEvent; consumers (the stored event log, metrics, alert rules) subscribe to them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


class EventKind(StrEnum):
    LOGIN = "login"
    LOGOUT = "logout"
    AUTH_FAILURE = "auth_failure"
    CSRF_FAILURE = "csrf_failure"
    RATE_LIMITED = "rate_limited"
    HOST_ADDED = "host_added"
    HOST_REMOVED = "host_removed"
    TOKEN_ROTATED = "token_rotated"
    TOKEN_REVOKED = "token_revoked"
    ENROLLED = "enrolled"
    CERT_BOUND = "cert_bound"
    DEPRECATED_CREDENTIAL = "deprecated_credential"
    TLS_FAILURE = "tls_failure"


class AuthFactor(StrEnum):
    """What failed in an AUTH_FAILURE; stored and counted, never shown to the client."""

    PASSWORD = "password"
    TOTP = "totp"
    AGENT_TOKEN = "agent_token"
    CROSS_HOST = "cross_host"
    REVOKED_TOKEN = "revoked_token"
    ROTATED_TOKEN = "rotated_token"
    SHARED_TOKEN = "shared_token"
    ENROLL_CODE = "enroll_code"
    CLIENT_CERT = "client_cert"
    METRICS_TOKEN = "metrics_token"


@dataclass(frozen=True)
class SecurityEvent:
    """One thing that happened. `detail` is a short machine word (factor, route, reason)."""

    kind: EventKind
    outcome: str = "refused"
    address: str = ""
    user: str = ""
    host: str = ""
    detail: str = ""
    at: float = field(default_factory=time.time)
