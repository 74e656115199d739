"""The shapes of the API's JSON answers, as the published contract declares them.

Declared, not enforced (see `contract.reply`): a route sends its dict as it is, and the
schemathesis run in CI checks each answer against these. Records whose fields belong to
another wing (a host, a command, a rollout) are objects here; their envelopes are exact.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class AuditEntries(BaseModel):
    """The audit log's entries, newest first (format=json)."""

    entries: list[dict[str, Any]]
