"""The one error tree of NixFleet.

    NixFleetError                 every error we raise on purpose
    ├── ConfigError               a setting is missing or malformed (start-up fails)
    ├── ValidationError           user or agent input broke a rule (→ HTTP 4xx)
    │   ├── InvalidHostId
    │   └── UnknownCommandKind
    ├── NotFound                  the thing asked for does not exist (→ 404)
    ├── Conflict                  legal input, wrong state (→ 409)
    │   ├── NotEnrolled           no agent can receive it (core.guards)
    │   └── AlreadyDeploying      a deploy is active; needs `force` (core.guards)
    ├── AuthError                 who you are could not be established (→ 401)
    ├── Forbidden                 known, but not allowed: CSRF, origin (→ 403)
    └── Unavailable               the database is busy or full: try again (→ 503)

Messages start with the component ("store: …", "agent: …") so a log line says where;
API answers and pages show them through `for_people`, without it.
Each error has a stable machine `code` used in API bodies `{"error": code, "detail": …}`.
"""

from __future__ import annotations

import re

# "store: host 'atlas' already exists": the component tells a log reader where; a person
# reading the page needs only the sentence.
_COMPONENT = re.compile(r"^[a-z][a-z_-]{1,20}: ")


def for_people(message: str) -> str:
    """Return message without its component prefix, as a sentence."""
    text = _COMPONENT.sub("", message, count=1).strip()
    if not text:
        return "The request was refused."
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?)" else f"{text}."


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


class Unavailable(NixFleetError):
    """Nothing was done; the same request can succeed later (sent with Retry-After)."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
