"""Hosts: list, add (an enrollment code is shown once), remove, label, and the agent
credentials: rotate or revoke the token, issue a new enrollment code, bind a client
certificate."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nixfleet.core.errors import NixFleetError
from nixfleet.core.labels import MAX_LABELS
from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import CsrfSession, Ctx, Session, client_address
from nixfleet.dashboard.replies import (
    AgentToken,
    CertBound,
    EnrollCode,
    HostLabels,
    HostList,
    HostSamples,
    HostStates,
    NewHostCode,
    Removed,
    Revoked,
)
from nixfleet.dashboard.routetable import RouteTable

router = RouteTable(prefix="/api/hosts")


# Only size caps here: core.labels decides, so API, CLI and UI give the same sentences.
LabelSet = Annotated[
    dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=200)]],
    Field(max_length=4 * MAX_LABELS),
]


class NewHost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Only a size cap here: core.hostid's rule decides, so API and UI show its message.
    host_id: str = Field(max_length=255)
    location: str = Field("", max_length=200)
    device_type: str = Field("", max_length=40)
    theme_color: str = Field("", pattern=r"^(#[0-9a-fA-F]{6})?$")
    labels: LabelSet = Field(default_factory=dict)


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: LabelSet


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    overlap_s: int | None = Field(None, ge=0, le=7 * 86400)


class CertBinding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(min_length=64, max_length=120)


# The audit action each security event of a host change is recorded as.
_ACTIONS = {
    EventKind.HOST_ADDED: "host_add",
    EventKind.HOST_REMOVED: "host_remove",
    EventKind.TOKEN_ROTATED: "token_rotate",
    EventKind.TOKEN_REVOKED: "token_revoke",
    EventKind.ENROLLED: "enroll_code",
    EventKind.CERT_BOUND: "cert_bind",
}


async def _note(
    request: Request,
    ctx: Ctx,
    session: Session,
    kind: EventKind,
    host_id: str,
    detail: str = "",
    audit_detail: dict[str, Any] | None = None,
) -> None:
    """Audit the change (stored before the answer) and report it as a security event."""
    address = client_address(request)
    await ctx.audit.record(
        session.username,
        _ACTIONS[kind],
        host=host_id,
        address=address,
        detail=audit_detail or ({"detail": detail} if detail else None),
    )
    ctx.security.emit(
        SecurityEvent(
            kind,
            outcome="ok",
            address=address,
            user=session.username,
            host=host_id,
            detail=detail,
        )
    )


@router.get("", responses=contract.reply(HostList))
async def list_hosts(
    ctx: Ctx,
    _: CsrfSession,
    state: Annotated[list[str] | None, Query(max_length=16)] = None,
    host_id: Annotated[list[str] | None, Query(max_length=1000)] = None,
    label: Annotated[str, Query(max_length=400)] = "",
) -> dict[str, Any]:
    """Return the hosts (in any of the ?state= given, among the ?host_id= given, matching
    the ?label= selector), their counts per state and the summary of their current plans."""
    return await ctx.fleet.fleet_view(state or [], host_id or [], label)


@router.get("/{host_id}/samples", responses=contract.reply(HostSamples))
async def host_samples(host_id: str, ctx: Ctx, _: CsrfSession) -> dict[str, Any]:
    """Return the host's load and memory of the last day (5-minute averages)."""
    host = await ctx.fleet.host(host_id)
    return {"host_id": host["id"], "samples": ctx.fleet.samples.points(host["id"], time.time())}


@router.get("/{host_id}/states", responses=contract.reply(HostStates))
async def host_states(
    host_id: str, ctx: Ctx, _: CsrfSession, limit: int = Query(100, ge=1, le=200)
) -> dict[str, Any]:
    """Return the host's state changes (online, deploy state, reboot), newest first."""
    return {"host_id": host_id[:63], "states": await ctx.fleet.state_history(host_id, limit)}


@router.post("", status_code=201, responses=contract.reply(NewHostCode, 201) | contract.errors(409))
async def add_host(
    body: NewHost, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    meta = body.model_dump(exclude={"host_id", "labels"})
    host = await ctx.fleet.add_host(body.host_id, meta, body.labels)
    code, expires = await ctx.fleet.identity.issue_enroll_code(host["id"])
    await _note(request, ctx, session, EventKind.HOST_ADDED, host["id"])
    return {"host": host, "enroll_code": code, "enroll_expires_at": expires}


@router.put("/{host_id}/labels", responses=contract.reply(HostLabels))
async def set_labels(
    host_id: str, body: Labels, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    """Replace the operator's labels of the host; a key its configuration sets still wins."""
    fields: dict[str, Any] = {"host": host_id[:63], "address": client_address(request)}
    try:
        host = await ctx.fleet.set_labels(host_id, body.labels)
    except NixFleetError as exc:
        ctx.audit.record_later(
            session.username, "host_labels", result=exc.code,
            detail={"error": str(exc)[:200]}, **fields,
        )  # fmt: skip
        raise
    await ctx.audit.record(
        session.username, "host_labels", detail={"labels": host["admin_labels"]}, **fields
    )
    return {
        "host_id": host["id"],
        "labels": host["labels"],
        "admin_labels": host["admin_labels"],
        "label_sources": host["label_sources"],
    }


@router.delete("/{host_id}", responses=contract.reply(Removed))
async def remove_host(
    host_id: str, request: Request, ctx: Ctx, session: CsrfSession
) -> JSONResponse:
    await ctx.fleet.remove_host(host_id)
    await _note(request, ctx, session, EventKind.HOST_REMOVED, host_id)
    return JSONResponse({"removed": host_id})


@router.post("/{host_id}/agent-token", responses=contract.reply(AgentToken))
async def rotate_agent_token(
    host_id: str,
    request: Request,
    ctx: Ctx,
    session: CsrfSession,
    body: Rotation | None = None,
) -> dict[str, Any]:
    overlap = body.overlap_s if body else None
    token = await ctx.fleet.rotate_token(host_id, overlap)
    await _note(request, ctx, session, EventKind.TOKEN_ROTATED, host_id)
    return {"host_id": host_id, "agent_token": token}


@router.delete("/{host_id}/agent-token", responses=contract.reply(Revoked))
async def revoke_agent_token(
    host_id: str, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    await ctx.fleet.revoke_token(host_id)
    await _note(request, ctx, session, EventKind.TOKEN_REVOKED, host_id)
    return {"revoked": host_id}


@router.post("/{host_id}/enroll-code", responses=contract.reply(EnrollCode))
async def new_enroll_code(
    host_id: str, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    code, expires = await ctx.fleet.identity.issue_enroll_code(host_id)
    await _note(request, ctx, session, EventKind.ENROLLED, host_id, "code_issued")
    return {"host_id": host_id, "enroll_code": code, "enroll_expires_at": expires}


@router.put("/{host_id}/client-cert", responses=contract.reply(CertBound))
async def bind_client_cert(
    host_id: str, body: CertBinding, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    bound = await ctx.fleet.identity.bind_cert(host_id, body.sha256)
    await ctx.fleet.publish_host(host_id)
    await _note(request, ctx, session, EventKind.CERT_BOUND, host_id, "", {"sha256": bound})
    return {"host_id": host_id, "cert_sha256": bound}


@router.delete("/{host_id}/client-cert", responses=contract.reply(CertBound))
async def unbind_client_cert(
    host_id: str, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    await ctx.fleet.identity.bind_cert(host_id, None)
    await ctx.fleet.publish_host(host_id)
    await _note(request, ctx, session, EventKind.CERT_BOUND, host_id, "unbound", {"sha256": None})
    return {"host_id": host_id, "cert_sha256": None}
