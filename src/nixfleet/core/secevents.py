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
    # A known caller asked for a route above its role (detail: the route).
    ACCESS_DENIED = "access_denied"
    USER_CHANGED = "user_changed"
    RATE_LIMITED = "rate_limited"
    HOST_ADDED = "host_added"
    HOST_REMOVED = "host_removed"
    TOKEN_ROTATED = "token_rotated"
    TOKEN_REVOKED = "token_revoked"
    ENROLLED = "enrolled"
    CERT_BOUND = "cert_bound"
    DEPRECATED_CREDENTIAL = "deprecated_credential"
    TLS_FAILURE = "tls_failure"
    # An authenticated agent sent a frame the protocol refuses (detail: MessageFault).
    BAD_AGENT_MESSAGE = "bad_agent_message"
    # An API token was added or revoked (outcome ok; detail: added, revoked; user: token:<id>).
    API_TOKEN = "api_token"
    # A forge push webhook (detail: HookVerdict): refused, replayed, another branch, or acted on.
    HOOK = "hook"


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
    # An API token (Bearer nft_…): unknown, revoked, expired, or its owner is disabled.
    API_TOKEN = "api_token"
    REVOKED_API_TOKEN = "revoked_api_token"
    EXPIRED_API_TOKEN = "expired_api_token"
    API_TOKEN_OWNER = "api_token_owner"
    # Single sign-on (security/oidc.py, dashboard/signon.py): why a sign-in was refused.
    PASSWORD_OFF = "password_off"  # a password login while NIXFLEET_PASSWORD_LOGIN=false
    OIDC_STATE = "oidc_state"  # unknown, replayed, expired, or another browser's state
    OIDC_PROVIDER = "oidc_provider"  # unreachable, refused, or an answer that is no answer
    OIDC_SIGNATURE = "oidc_signature"
    OIDC_EXPIRED = "oidc_expired"
    OIDC_AUDIENCE = "oidc_audience"
    OIDC_ISSUER = "oidc_issuer"
    OIDC_NONCE = "oidc_nonce"
    OIDC_TOKEN = "oidc_token"  # any other claim wrong or missing
    OIDC_UNMAPPED = "oidc_unmapped"  # no rule of NIXFLEET_OIDC_ROLES matches, no default
    OIDC_USER = "oidc_user"  # no usable name, a local user's name, or another subject's
    OIDC_DISABLED = "oidc_disabled"


class MessageFault(StrEnum):
    """Why an agent's frame was refused (close 4400, or 1009 when uvicorn refused it)."""

    NOT_JSON = "not_json"
    INVALID = "invalid"
    BINARY = "binary"
    TOO_LARGE = "too_large"
    OUT_OF_ORDER = "out_of_order"


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
