"""Rollouts: create (or preview) one, read them, pause, resume and abort."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nixfleet.core.commands import parse_kind
from nixfleet.core.errors import NixFleetError, NotFound
from nixfleet.core.rollouts import MAX_HOSTS, RolloutPolicy, describe_plan
from nixfleet.dashboard import apitokens, contract
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.deps import CsrfSession, Ctx, Session, client_address, optional_session
from nixfleet.dashboard.replies import Rollout, RolloutList, RolloutPlan
from nixfleet.dashboard.responses import FiniteJSONResponse
from nixfleet.dashboard.routetable import RouteTable

router = RouteTable()


class RolloutRequest(BaseModel):
    """The hosts are named (host_ids) or chosen by a label selector (label=role=web)."""

    model_config = ConfigDict(extra="forbid")
    command: str = Field(max_length=40)
    host_ids: list[Annotated[str, Field(max_length=100)]] = Field([], max_length=MAX_HOSTS)
    label: str = Field("", max_length=400)
    policy: RolloutPolicy = RolloutPolicy()
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_selection(self) -> RolloutRequest:
        if bool(self.host_ids) == bool(self.label):
            raise ValueError("name the hosts (host_ids) or give a label selector (label), one")
        return self


@router.post(
    "/api/rollouts",
    responses=contract.reply(RolloutPlan)
    | contract.reply(Rollout, 201)
    | contract.errors(404, 409),
)
async def create_rollout(
    body: RolloutRequest, request: Request, ctx: Ctx, session: CsrfSession
) -> Response:
    """Return the plan in words (dry_run), or start the rollout: 201 with its record."""
    host_ids = body.host_ids or await ctx.fleet.select(body.label)
    if body.dry_run:
        await apitokens.check_scope(ctx, request, session, host_ids, parse_kind(body.command))
        plan = await ctx.rollouts.plan(host_ids, body.command, body.policy)
        plan["summary"] = describe_plan(plan["kind"], plan["waves"], body.policy)
        return FiniteJSONResponse(plan)
    try:
        await apitokens.check_scope(ctx, request, session, host_ids, parse_kind(body.command))
        ro = await ctx.rollouts.create(session.username, host_ids, body.command, body.policy)
    except NixFleetError as exc:
        _audit_refusal(ctx, request, session, "rollout_start", exc, {"command": body.command[:40]})
        raise
    refused = [r["host_id"] for r in ro["refused"]][:100]
    detail = {"rollout_id": ro["id"], "command": ro["kind"], "refused": refused}
    await _audit(ctx, request, session, "rollout_start", detail)
    return FiniteJSONResponse(ro, status_code=201)


@router.get("/api/rollouts", responses=contract.reply(RolloutList))
async def list_rollouts(
    ctx: Ctx, _: CsrfSession, limit: int = Query(50, ge=1, le=200)
) -> dict[str, Any]:
    return {"rollouts": await ctx.rollouts.recent(limit)}


@router.get("/api/rollouts/{rollout_id}", responses=contract.reply(Rollout))
async def get_rollout(rollout_id: str, ctx: Ctx, _: CsrfSession) -> dict[str, Any]:
    return await ctx.rollouts.view(rollout_id[:64])


@router.post(
    "/api/rollouts/{rollout_id}/{action}", responses=contract.reply(Rollout) | contract.errors(409)
)
async def act_on_rollout(
    rollout_id: str, action: str, request: Request, ctx: Ctx, session: CsrfSession
) -> dict[str, Any]:
    """pause (no new wave starts), resume, or abort (queued hosts are cancelled)."""
    acts = {"pause": ctx.rollouts.pause, "resume": ctx.rollouts.resume, "abort": ctx.rollouts.abort}
    act = acts.get(action)
    detail = {"rollout_id": rollout_id[:64]}
    if act is None:
        raise NotFound(f"rollouts: {action[:20]!r} is not an action; use pause, resume or abort")
    try:
        await apitokens.check_rollout(ctx, request, session, rollout_id)
        ro = await act(rollout_id[:64])
    except NixFleetError as exc:
        _audit_refusal(ctx, request, session, f"rollout_{action}", exc, detail)
        raise
    await _audit(ctx, request, session, f"rollout_{action}", detail)
    return ro


async def _audit(
    ctx: Context, request: Request, session: Session, action: str, detail: dict[str, Any]
) -> None:
    """Store the entry of an accepted action before the answer (503 if it cannot be)."""
    await ctx.audit.record(
        session.username, action, address=client_address(request), result="accepted",
        detail=detail,
    )  # fmt: skip


def _audit_refusal(
    ctx: Context,
    request: Request,
    session: Session,
    action: str,
    exc: NixFleetError,
    detail: dict[str, Any],
) -> None:
    ctx.audit.record_later(
        session.username, action, address=client_address(request), result=exc.code,
        detail={**detail, "error": str(exc)[:200]},
    )  # fmt: skip


@router.get("/rollouts", responses=contract.page(200))
async def rollouts_page(
    request: Request, ctx: Ctx, session: Annotated[Session | None, Depends(optional_session)]
) -> Response:
    return _page(request, ctx, session, "")


@router.get("/rollouts/{rollout_id}", responses=contract.page(200))
async def rollout_page(
    rollout_id: str,
    request: Request,
    ctx: Ctx,
    session: Annotated[Session | None, Depends(optional_session)],
) -> Response:
    return _page(request, ctx, session, rollout_id[:64])


def _page(request: Request, ctx: Context, session: Session | None, rollout_id: str) -> Response:
    if session is None:
        return RedirectResponse("/login", status_code=303)
    return ctx.templates.TemplateResponse(
        request,
        "rollout.html",
        {"csrf": session.csrf, "user": session.username, "rollout_id": rollout_id},
    )
