"""Change counters: one number per kind of change, moved by database triggers (migration
0016) in the transaction that makes the change, whoever writes it: a dashboard, the CLI,
another replica, a script.

A dashboard process that must notice changes made elsewhere reads the counter, one small
row, and does the expensive check only when the number moved: the live-credential check
over every connected agent, the scan for hosts added or removed.
"""

from __future__ import annotations

from sqlalchemy import select

from nixfleet.storage.db import Database
from nixfleet.storage.tables import change_counters

# A host's token_hash or identity_state written (rotated, revoked, enrolled, first token),
# or a host removed.
CREDENTIALS = "credentials"
HOSTS = "hosts"  # a host added or removed

# The counters belong to the database they count in: `db copy` leaves them out, and the
# target's own triggers count the rows copied into it.
NOT_COPIED = frozenset({change_counters.name})


async def read(db: Database, name: str) -> int:
    """Return how many changes of kind name were counted so far (0 before the first)."""
    async with db.reader.connect() as conn:
        value = (
            await conn.execute(
                select(change_counters.c.value).where(change_counters.c.name == name)
            )
        ).scalar_one_or_none()
    return int(value or 0)
