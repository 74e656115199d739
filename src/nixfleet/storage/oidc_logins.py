"""Single sign-ons under way: the state, nonce and PKCE verifier of each, used once.

The state is stored as a hash (it travels in URLs); the row is deleted by the first
callback that presents it, so a replayed state finds nothing. Rows older than the
sign-in window are pruned whenever a new one is added, and their number is capped.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from sqlalchemy import delete, func, select

from nixfleet.core.errors import Unavailable
from nixfleet.storage.db import Database
from nixfleet.storage.tables import oidc_logins

WINDOW_S = 600.0  # a sign-in at the provider must come back within this
MAX_PENDING = 10_000


@dataclass(frozen=True)
class Pending:
    nonce: str
    verifier: str
    created_at: float


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


async def add(db: Database, state: str, nonce: str, verifier: str) -> None:
    """Store a new sign-in; raise Unavailable when too many are under way."""
    now = time.time()
    async with db.engine.begin() as conn:
        await conn.execute(delete(oidc_logins).where(oidc_logins.c.created_at < now - WINDOW_S))
        count = (await conn.execute(select(func.count()).select_from(oidc_logins))).scalar()
        if (count or 0) >= MAX_PENDING:
            raise Unavailable("signon: too many sign-ins under way; try again in a few minutes")
        await conn.execute(
            oidc_logins.insert().values(
                state_hash=_hash(state), nonce=nonce, verifier=verifier, created_at=now
            )
        )


async def take(db: Database, state: str) -> Pending | None:
    """Return the sign-in of state and delete it, or None (unknown, used or too old)."""
    async with db.engine.begin() as conn:
        row = (
            await conn.execute(
                delete(oidc_logins)
                .where(oidc_logins.c.state_hash == _hash(state))
                .returning(oidc_logins.c.nonce, oidc_logins.c.verifier, oidc_logins.c.created_at)
            )
        ).first()
    if row is None or row.created_at < time.time() - WINDOW_S:
        return None
    return Pending(row.nonce, row.verifier, row.created_at)
