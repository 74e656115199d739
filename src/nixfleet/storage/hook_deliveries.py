"""Where forge deliveries are remembered, so each is acted on once."""

from __future__ import annotations

from sqlalchemy import delete

from nixfleet.storage.db import Database
from nixfleet.storage.tables import hook_deliveries

# Forges retry a failed delivery for hours, not weeks; older ones need not be kept.
KEEP_S = 30 * 86400


async def remember(db: Database, forge: str, delivery: str, body_sha256: str, now: float) -> bool:
    """Record a delivery; return False when this delivery id or this body was seen before.

    One INSERT … ON CONFLICT DO NOTHING over both unique keys, so two replicas receiving
    the same delivery cannot both act on it; deliveries past KEEP_S are dropped alongside.
    """
    row = {"forge": forge, "delivery": delivery, "body_sha256": body_sha256, "received_at": now}
    async with db.engine.begin() as conn:
        await conn.execute(
            delete(hook_deliveries).where(hook_deliveries.c.received_at < now - KEEP_S)
        )
        res = await conn.execute(
            db.insert_ignore(hook_deliveries).values(**row).returning(hook_deliveries.c.forge)
        )
        return res.first() is not None
