"""The last TOTP time step each account used, so a code is accepted only once."""

from __future__ import annotations

from sqlalchemy import update

from nixfleet.storage.db import Database
from nixfleet.storage.tables import totp_steps


async def claim_step(db: Database, username: str, step: int) -> bool:
    """Return True if step is newer than any step username used before, and record it.

    The conditional UPDATE is the claim, so two replicas racing with one code cannot
    both win: exactly one of them changes the row.
    """
    async with db.engine.begin() as conn:
        claimed = await conn.execute(
            update(totp_steps)
            .where(totp_steps.c.username == username, totp_steps.c.last_step < step)
            .values(last_step=step)
        )
        if claimed.rowcount == 1:
            return True
        # No row, or a row at this step or later: only a first use can still insert.
        # RETURNING, not rowcount: drivers need not count the rows of an INSERT (psycopg's
        # through SQLAlchemy reports -1), but a skipped row returns nothing on every engine.
        first = await conn.execute(
            db.insert_ignore(totp_steps)
            .values(username=username, last_step=step)
            .returning(totp_steps.c.username)
        )
        return first.first() is not None
