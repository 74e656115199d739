"""The API's contract, for the people and programs that call it (no documentation pages:
they would be one more thing served without a session)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from nixfleet.dashboard.deps import CurrentSession
from nixfleet.dashboard.routetable import RouteTable

router = RouteTable()


@router.get("/api/openapi.json")
async def openapi(request: Request, _: CurrentSession) -> dict[str, Any]:
    """Return the OpenAPI schema of every route, with every answer each can give."""
    return request.app.openapi()  # type: ignore[no-any-return]
