"""Commands: per host, in bulk, their state and output, cancelling queued ones, and the
health gate a host's switches carry by default."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator

from nixfleet.core.commands import parse_kind
from nixfleet.core.errors import NixFleetError
from nixfleet.core.gates import HealthGate
from nixfleet.dashboard import apitokens, contract
from nixfleet.dashboard.deps import CsrfSession, Ctx, client_address
from nixfleet.dashboard.replies import (
    BulkResults,
    CommandWithOutput,
    HealthGateSet,
    HostCommands,
    OutputPage,
    Queued,
)
from nixfleet.dashboard.routetable import RouteTable

router = RouteTable(prefix="/api")


def _encodable(value: str) -> str:
    """Refuse text with lone surrogates (JSON "\\udcff"): it cannot be stored or answered."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate (not valid Unicode text)") from None
    return value


Text = Annotated[str, AfterValidator(_encodable)]


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: Text = Field(max_length=40)
    # The operator confirmed a second deploy while one is active (guard rail, core.guards).
    force: bool = False
    # A switch's own health gate (core.gates); none: the host's default, else the fleet's.
    gate: HealthGate | None = None
    # Switch without the default gate.
    no_gate: bool = False
    # A rollback's target: one of the host's reported generations (None: the previous).
    generation: StrictInt | None = Field(None, ge=1, le=2**31 - 1)


class GateDefault(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # None: the host's switches carry the fleet's default (NIXFLEET_HEALTH_GATE).
    gate: HealthGate | None


class BulkRequest(BaseModel):
    """The hosts are named (host_ids) or chosen by a label selector (label=role=web)."""

    model_config = ConfigDict(extra="forbid")
    command: Text = Field(max_length=40)
    host_ids: list[Annotated[Text, Field(max_length=255)]] = Field([], max_length=10000)
    label: Text = Field("", max_length=400)

    @model_validator(mode="after")
    def _one_selection(self) -> BulkRequest:
        if bool(self.host_ids) == bool(self.label):
            raise ValueError("name the hosts (host_ids) or give a label selector (label), one")
        return self


@router.post(
    "/hosts/{host_id}/command",
    status_code=202,
    responses=contract.reply(Queued, 202) | contract.errors(409),
)
async def queue_command(
    host_id: str, body: CommandRequest, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    fields: dict[str, Any] = {"host": host_id[:63], "address": client_address(request)}
    try:
        await apitokens.check_scope(ctx, request, session, [host_id], parse_kind(body.command))
        cmd = await ctx.fleet.dispatch(
            session.username, host_id, body.command, body.force, body.gate, body.no_gate,
            body.generation,
        )  # fmt: skip
    except NixFleetError as exc:
        ctx.audit.record_later(
            session.username, "command", result=exc.code,
            detail={"command": body.command, "error": str(exc)[:200]}, **fields,
        )  # fmt: skip
        raise
    await ctx.audit.record(
        session.username, "command", result="accepted",
        detail={
            "command": body.command, "command_id": cmd["id"], "force": body.force,
            "gate": cmd["gate"], "generation": cmd["generation"],
        },
        **fields,
    )  # fmt: skip
    return {"command_id": cmd["id"], "state": cmd["state"], "gate": cmd["gate"]}


@router.put("/hosts/{host_id}/health-gate", responses=contract.reply(HealthGateSet))
async def set_health_gate(
    host_id: str, body: GateDefault, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    """Set (or with null clear) the health gate the host's switches carry by default."""
    host = await ctx.fleet.set_health_gate(host_id, body.gate)
    await ctx.audit.record(
        session.username, "health_gate", host=host["id"], address=client_address(request),
        detail={"gate": host["health_gate"]},
    )  # fmt: skip
    return {"host_id": host["id"], "health_gate": host["health_gate"]}


@router.post(
    "/commands/bulk",
    status_code=202,
    responses=contract.reply(BulkResults, 202) | contract.errors(404),
)
async def queue_bulk(
    body: BulkRequest, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    """Give each host its own command: one bad or offline host never fails the rest.

    A token's scope is the exception: one host outside it refuses the whole request.
    """
    host_ids = body.host_ids or await ctx.fleet.select(body.label)
    try:
        await apitokens.check_scope(ctx, request, session, host_ids, parse_kind(body.command))
    except NixFleetError as exc:
        ctx.audit.record_later(
            session.username, "bulk_command", address=client_address(request), result=exc.code,
            detail={"command": body.command, "error": str(exc)[:200]},
        )  # fmt: skip
        raise
    results = await ctx.fleet.dispatch_many(session.username, host_ids, body.command)
    refused = sum(1 for r in results if "error" in r)
    await ctx.audit.record(
        session.username,
        "bulk_command",
        address=client_address(request),
        result="accepted" if not refused else f"partial ({refused} refused)",
        detail={
            "command": body.command,
            **({"label": body.label} if body.label else {}),
            "hosts": [r["host_id"] for r in results][:500],
            "refused": [r["host_id"] for r in results if "error" in r][:500],
        },
    )
    return {"results": results}


@router.get("/hosts/{host_id}/commands", responses=contract.reply(HostCommands))
async def host_commands(
    host_id: str, ctx: Ctx, _: CsrfSession, limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    return {"commands": await ctx.fleet.host_commands(host_id, limit)}


@router.get("/commands/{command_id}", responses=contract.reply(CommandWithOutput))
async def get_command(command_id: str, ctx: Ctx, _: CsrfSession) -> dict[str, Any]:
    """Return the command and its first output lines; `output_next` pages on (below)."""
    return await ctx.fleet.command_with_output(command_id)


@router.get("/commands/{command_id}/output", responses=contract.reply(OutputPage))
async def get_output(
    command_id: str,
    ctx: Ctx,
    _: CsrfSession,
    after_seq: int = Query(0, ge=0, le=2**31 - 1),
    limit: int = Query(1000, ge=1, le=5000),
) -> dict[str, Any]:
    """Return output lines after after_seq; `next` is the after_seq of the next page."""
    return await ctx.fleet.output_page(command_id, after_seq, limit)


@router.post(
    "/commands/{command_id}/cancel", responses=contract.reply(Queued) | contract.errors(409)
)
async def cancel_command(
    command_id: str, request: Request, ctx: Ctx, session: CsrfSession
) -> JSONResponse:
    try:
        await apitokens.check_command(ctx, request, session, command_id)
        cmd = await ctx.fleet.cancel_queued(command_id)
    except NixFleetError as exc:
        ctx.audit.record_later(
            session.username, "command_cancel", address=client_address(request),
            result=exc.code, detail={"command_id": command_id[:64]},
        )  # fmt: skip
        raise
    await ctx.audit.record(
        session.username, "command_cancel", host=cmd["host_id"],
        address=client_address(request), detail={"command_id": cmd["id"]},
    )  # fmt: skip
    return JSONResponse({"command_id": cmd["id"], "state": cmd["state"]})
