"""Prometheus metrics at /metrics, for a scraper holding the token or on an allowed address."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from nixfleet.core.errors import AuthError, Forbidden
from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent
from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx, client_address
from nixfleet.dashboard.routetable import RouteTable
from nixfleet.security.scrape import refusal

router = RouteTable()


@router.get("/metrics", responses={**contract.body("text/plain"), **contract.errors(401, 403)})
async def metrics(request: Request, ctx: Ctx) -> Response:
    settings = ctx.settings
    address = client_address(request)
    why = refusal(
        settings.metrics_token.get_secret_value(),
        settings.metrics_networks,
        address,
        request.headers.get("authorization"),
    )
    if why == "disabled":
        raise Forbidden(
            "metrics: disabled; set NIXFLEET_METRICS_TOKEN or NIXFLEET_METRICS_ALLOW to enable"
        )
    if why == "address":
        raise Forbidden("metrics: this address may not read metrics")
    if why == "token":
        ctx.security.emit(
            SecurityEvent(EventKind.AUTH_FAILURE, address=address, detail=AuthFactor.METRICS_TOKEN)
        )
        raise AuthError("metrics: send Authorization: Bearer <NIXFLEET_METRICS_TOKEN>")
    return Response(ctx.metrics.render(), media_type=ctx.metrics.media_type)
