"""Forge push webhooks: `POST /api/hooks/github|gitlab|forgejo|gitea` (no session: the
forge proves itself with its signature or token, checked over the raw body)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from nixfleet.core.errors import NotFound
from nixfleet.core.hooks import HookVerdict
from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx, client_address
from nixfleet.dashboard.replies import HookResult
from nixfleet.dashboard.responses import FiniteJSONResponse
from nixfleet.dashboard.routetable import RouteTable
from nixfleet.security.webhooks import forge_named

router = RouteTable(prefix="/api/hooks")
_REFUSED = {HookVerdict.DISABLED, HookVerdict.BAD_SIGNATURE, HookVerdict.NO_DELIVERY,
            HookVerdict.BAD_PAYLOAD, HookVerdict.REPLAY}  # fmt: skip


@router.post(
    "/{forge_name}", responses=contract.reply(HookResult, 202) | contract.errors(400, 401, 409)
)
async def receive_hook(forge_name: str, request: Request, ctx: Ctx) -> Response:
    forge = forge_named(forge_name)
    if forge is None:
        raise NotFound(f"hooks: no forge {forge_name[:20]!r}; use github, gitlab or forgejo")
    body = await request.body()
    out = await ctx.hooks.receive(forge, request.headers, body)
    address = client_address(request)
    outcome = "refused" if out.verdict in _REFUSED else "accepted"
    ctx.security.emit(
        SecurityEvent(EventKind.HOOK, outcome, address=address, detail=out.verdict.value)
    )
    actor, result = f"hook:{forge.value}", out.verdict.value
    detail = {"forge": forge.value, "delivery": out.delivery[:100], **out.audit}
    if out.verdict == HookVerdict.ACCEPTED:
        await ctx.audit.record(actor, "hook_push", address=address, result=result, detail=detail)
    elif out.verdict not in (HookVerdict.BAD_SIGNATURE, HookVerdict.DISABLED):
        # Unsigned noise is counted, not audited: anyone could fill the log with it.
        ctx.audit.record_later(actor, "hook_push", address=address, result=result, detail=detail)
    if out.status >= 400:
        return FiniteJSONResponse({"error": out.verdict.value, "detail": out.detail}, out.status)
    return FiniteJSONResponse({"result": out.verdict.value, "detail": out.detail, **out.audit},
                              out.status)  # fmt: skip
