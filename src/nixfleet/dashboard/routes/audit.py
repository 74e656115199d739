"""The audit log: filtered view, JSON and JSON-lines export."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from nixfleet.core.errors import ValidationError
from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx, CurrentSession, Session, optional_session
from nixfleet.dashboard.replies import AuditEntries
from nixfleet.dashboard.routetable import RouteTable
from nixfleet.storage import audit as store

router = RouteTable()
ACTIONS = (
    "login", "logout", "command", "bulk_command", "command_cancel", "host_add", "host_remove",
    "host_enroll", "enroll_code", "token_rotate", "token_revoke", "cert_bind", "user_add",
    "user_change", "host_labels", "api_token_add", "api_token_revoke",
)  # fmt: skip


class AuditFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actor: str = Field("", max_length=100)
    action: str = Field("", max_length=40)
    host: str = Field("", max_length=63)
    since: str = Field("", max_length=40)  # ISO 8601 (UTC if no zone) or Unix seconds
    until: str = Field("", max_length=40)
    limit: int = Field(200, ge=1, le=100_000)
    format: str = Field("json", pattern="^(json|jsonl)$")


def _when(name: str, value: str) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"audit: {name}: not a date-time or Unix time: {value!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def _search(ctx: Ctx, f: AuditFilter) -> list[dict[str, Any]]:
    return await store.search(
        ctx.db,
        actor=f.actor,
        action=f.action,
        host=f.host,
        since=_when("since", f.since),
        until=_when("until", f.until),
        limit=f.limit,
    )


def _fmt(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


@router.get("/audit", responses=contract.page(200))
async def audit_page(
    request: Request,
    ctx: Ctx,
    f: Annotated[AuditFilter, Query()],
    session: Annotated[Session | None, Depends(optional_session)],
) -> Response:
    if session is None:
        return RedirectResponse("/login", status_code=303)
    query = f.model_dump(exclude={"limit", "format"}, exclude_defaults=True)
    return ctx.templates.TemplateResponse(
        request,
        "audit.html",
        {
            "csrf": session.csrf,
            "user": session.username,
            "entries": await _search(ctx, f),
            "f": f,
            "actions": ACTIONS,
            "fmt": _fmt,
            "export_query": urlencode({**query, "format": "jsonl", "limit": 100_000}),
        },
    )


@router.get(
    "/api/audit",
    responses=contract.reply(AuditEntries, also="application/x-ndjson"),  # format=jsonl
)
async def audit_api(ctx: Ctx, _: CurrentSession, f: Annotated[AuditFilter, Query()]) -> Response:
    """Return entries newest first as JSON, or oldest first as JSON lines (an export)."""
    entries = await _search(ctx, f)
    if f.format == "json":
        body = json.dumps({"entries": entries}, separators=(",", ":"))
        return Response(body, media_type="application/json")
    lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in reversed(entries))
    return Response(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="nixfleet-audit.jsonl"'},
    )
