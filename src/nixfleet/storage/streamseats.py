"""Open browser event streams of every replica, counted against one set of caps.

Each open stream holds a seat: a row naming the replica that serves it, with a lease that
replica renews (storage/replicas.py's rhythm). A closed stream gives its seat back; the
seats of a replica that died simply stop counting when their lease runs out.

Taking a seat counts the live seats of the session, of the address and of the whole
fleet, and inserts one if all are under their caps. Two replicas must not both take the
last seat, so the count and the insert run under one transaction-scoped advisory lock
(opening a stream is rare: a page load, not a request per second).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, text, update

from nixfleet.storage.db import Database
from nixfleet.storage.tables import stream_seats

_CHUNK = 500
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('nixfleet.stream_seats'))")


@dataclass(frozen=True)
class Caps:
    per_session: int
    per_address: int
    total: int


def _session_key(session: str) -> str:
    # Session ids are digests already; a token's "token:…" name may be longer.
    return hashlib.sha256(session.encode()).hexdigest()


async def take(
    db: Database, replica: str, session: str, address: str, caps: Caps, now: float, lease_s: float
) -> tuple[str | None, str | None]:
    """Return (seat id, None), or (None, why) when a cap is reached."""
    key, address = _session_key(session), address[:64]
    live = stream_seats.c.lease_until >= now
    async with db.engine.begin() as conn:
        await conn.execute(_LOCK)
        await conn.execute(delete(stream_seats).where(~live))
        counts = (
            await conn.execute(
                select(
                    func.count().filter(stream_seats.c.session == key),
                    func.count().filter(stream_seats.c.address == address),
                    func.count(),
                ).where(live)
            )
        ).one()
        if counts[0] >= caps.per_session:
            return None, f"this session already has {caps.per_session} open event streams"
        if counts[1] >= caps.per_address:
            return None, f"this address already has {caps.per_address} open event streams"
        if counts[2] >= caps.total:
            return None, f"the dashboard already serves {caps.total} open event streams"
        seat = secrets.token_hex(16)
        await conn.execute(
            insert(stream_seats).values(
                id=seat, replica=replica, session=key, address=address, lease_until=now + lease_s
            )
        )
    return seat, None


async def give_back(db: Database, seats: list[str]) -> None:
    async with db.engine.begin() as conn:
        for i in range(0, len(seats), _CHUNK):
            await conn.execute(
                delete(stream_seats).where(stream_seats.c.id.in_(seats[i : i + _CHUNK]))
            )


async def renew(db: Database, seats: list[str], now: float, lease_s: float) -> None:
    """Extend the lease of the seats of the streams still open."""
    async with db.engine.begin() as conn:
        for i in range(0, len(seats), _CHUNK):
            await conn.execute(
                update(stream_seats)
                .where(stream_seats.c.id.in_(seats[i : i + _CHUNK]))
                .values(lease_until=now + lease_s)
            )


async def count(db: Database, now: float) -> int:
    async with db.reader.connect() as conn:
        query = select(func.count()).where(stream_seats.c.lease_until >= now)
        return int((await conn.execute(query)).scalar_one())
