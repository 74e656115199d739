"""The one error tree of NixFleet.

    NixFleetError                 every error we raise on purpose
    ├── ConfigError               a setting is missing or malformed (start-up fails)
    ├── ValidationError           user or agent input broke a rule (→ HTTP 4xx)
    │   ├── InvalidHostId
    │   └── UnknownCommandKind
    ├── NotFound                  the thing asked for does not exist (→ 404)
    ├── Conflict                  legal input, wrong state (→ 409)
    ├── AuthError                 who you are could not be established (→ 401)
    └── Forbidden                 known, but not allowed: CSRF, origin (→ 403)

Messages start with the component ("store: …", "agent: …") so a log line says where.
Each error has a stable machine `code` used in API bodies `{"error": code, "detail": …}`.
"""

from __future__ import annotations


class NixFleetError(Exception):
    code = "error"
    status = 400


class ConfigError(NixFleetError):
    code = "config"


class ValidationError(NixFleetError):
    code = "invalid"
    status = 422


class InvalidHostId(ValidationError):
    code = "invalid_host_id"


class UnknownCommandKind(ValidationError):
    code = "unknown_command"


class NotFound(NixFleetError):
    code = "not_found"
    status = 404


class Conflict(NixFleetError):
    code = "conflict"
    status = 409


class AuthError(NixFleetError):
    code = "unauthorized"
    status = 401


class Forbidden(NixFleetError):
    code = "forbidden"
    status = 403
