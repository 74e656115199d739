"""Enrollment: an agent exchanges its one-time code for its per-host token.

No session: the code is the credential. It travels in the body (never the URL, which
proxies log), works once, and expires. The endpoint is one fixed path, so a rate limit
keyed on it and the client address covers every guess.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from nixfleet.core.errors import AuthError
from nixfleet.core.secevents import AuthFactor, EventKind, SecurityEvent
from nixfleet.dashboard import contract
from nixfleet.dashboard.deps import Ctx, client_address
from nixfleet.dashboard.replies import Enrolled
from nixfleet.dashboard.routetable import RouteTable

router = RouteTable()
log = logging.getLogger("nixfleet.enroll")


class Enrollment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host_id: str = Field(min_length=1, max_length=63)
    code: str = Field(min_length=1, max_length=100, repr=False)


@router.post("/api/agent/enroll", responses=contract.reply(Enrolled) | contract.errors(401))
async def enroll(body: Enrollment, request: Request, ctx: Ctx) -> dict[str, Any]:
    address = client_address(request)
    token, outcome = await ctx.fleet.identity.enroll(body.host_id, body.code, address)
    host = body.host_id[:63]
    if token is None:
        ctx.security.emit(
            SecurityEvent(
                EventKind.AUTH_FAILURE, address=address, host=host, detail=AuthFactor.ENROLL_CODE
            )
        )
        log.warning("enroll: refused a code for %r from %s: %s", host, address, outcome)
        raise AuthError("enroll: the enrollment code is wrong, already used or expired")
    await ctx.audit.record(
        "agent", "host_enroll", host=host, address=address, detail={"factor": "enroll_code"}
    )
    ctx.security.emit(
        SecurityEvent(
            EventKind.ENROLLED, outcome="ok", address=address, host=host, detail="enroll_code"
        )
    )
    await ctx.fleet.publish_host(host)
    return {"host_id": host, "agent_token": token}
