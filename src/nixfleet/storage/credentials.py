"""Where agent credentials live: each host's current token hash and state, the tokens it
retired (rotated or revoked), its client-certificate binding and its enrollment codes.

Only HMACs are stored. The HMAC of a presented token is also the lookup key, so finding
whose token it is needs no scan and no comparison against every host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update

from nixfleet.core.errors import NotFound
from nixfleet.storage.asyncengine import AsyncConnection
from nixfleet.storage.db import Database
from nixfleet.storage.tables import enroll_codes, hosts, retired_tokens


@dataclass(frozen=True)
class Identity:
    host_id: str
    token_hash: str | None
    identity_state: str
    cert_sha256: str | None


_IDENTITY = (hosts.c.id, hosts.c.token_hash, hosts.c.identity_state, hosts.c.cert_sha256)


def _identity(row: Any) -> Identity:
    return Identity(row.id, row.token_hash, row.identity_state, row.cert_sha256)


async def identity(db: Database, host_id: str) -> Identity | None:
    """Return a host's credential state, or None when there is no such host."""
    async with db.reader.connect() as conn:
        row = (await conn.execute(select(*_IDENTITY).where(hosts.c.id == host_id))).first()
    return None if row is None else _identity(row)


async def identities(db: Database, host_ids: list[str]) -> dict[str, Identity]:
    """Return the credential state of each of host_ids that still exists."""
    if not host_ids:
        return {}
    async with db.reader.connect() as conn:
        rows = await conn.execute(select(*_IDENTITY).where(hosts.c.id.in_(host_ids)))
    return {r.id: _identity(r) for r in rows}


async def by_token_hash(db: Database, token_hash: str) -> Identity | None:
    """Return the host whose current token hashes to token_hash, if any."""
    async with db.reader.connect() as conn:
        row = (
            await conn.execute(select(*_IDENTITY).where(hosts.c.token_hash == token_hash))
        ).first()
    return None if row is None else _identity(row)


async def retired(db: Database, token_hash: str) -> dict[str, Any] | None:
    """Return the retired-token row for token_hash (host, reason, valid_until), if any."""
    async with db.reader.connect() as conn:
        row = (
            await conn.execute(
                select(retired_tokens).where(retired_tokens.c.token_hash == token_hash)
            )
        ).first()
    return None if row is None else dict(row._mapping)


async def _retire_current(
    conn: AsyncConnection, host_id: str, reason: str, now: float, valid_until: float | None
) -> None:
    # An earlier rotation's overlap ends now, so at most two tokens ever work. (This write
    # also takes SQLite's one write lock before the read below.)
    await conn.execute(
        update(retired_tokens)
        .where(retired_tokens.c.host_id == host_id, retired_tokens.c.valid_until.is_not(None))
        .values(valid_until=None)
    )
    # FOR UPDATE: two replicas revoking or rotating at once would otherwise both read and
    # retire the same token on PostgreSQL, and the second fail on the retired table's key.
    old = (
        await conn.execute(
            select(hosts.c.token_hash).where(hosts.c.id == host_id).with_for_update()
        )
    ).scalar_one_or_none()
    if old:
        await conn.execute(
            insert(retired_tokens).values(
                token_hash=old,
                host_id=host_id,
                reason=reason,
                retired_at=now,
                valid_until=valid_until,
            )
        )


async def replace_token(
    db: Database, host_id: str, new_hash: str, now: float, valid_until: float | None = None
) -> None:
    """Make new_hash the host's token; the old one is retired as rotated (valid until
    valid_until when an overlap was asked for); an earlier overlap ends now.
    Raise NotFound for an unknown host."""
    async with db.engine.begin() as conn:
        await _retire_current(conn, host_id, "rotated", now, valid_until)
        res = await conn.execute(
            update(hosts)
            .where(hosts.c.id == host_id)
            .values(token_hash=new_hash, identity_state="active")
        )
        if res.rowcount == 0:
            raise NotFound(f"store: no host {host_id!r}")


async def revoke(db: Database, host_id: str, now: float) -> None:
    """Retire the host's token, end every overlap and drop pending enrollment codes."""
    async with db.engine.begin() as conn:
        await _retire_current(conn, host_id, "revoked", now, None)
        res = await conn.execute(
            update(hosts)
            .where(hosts.c.id == host_id)
            .values(token_hash=None, identity_state="revoked")
        )
        if res.rowcount == 0:
            raise NotFound(f"store: no host {host_id!r}")
        await conn.execute(
            update(retired_tokens)
            .where(retired_tokens.c.host_id == host_id)
            .values(reason="revoked", valid_until=None)
        )
        await conn.execute(
            delete(enroll_codes).where(
                enroll_codes.c.host_id == host_id, enroll_codes.c.used_at.is_(None)
            )
        )


async def claim_first_token(db: Database, host_id: str, new_hash: str) -> bool:
    """Give a host that never had a token its first one; False if it has one meanwhile."""
    async with db.engine.begin() as conn:
        res = await conn.execute(
            update(hosts)
            .where(hosts.c.id == host_id, hosts.c.identity_state == "none")
            .values(token_hash=new_hash, identity_state="active")
        )
    return res.rowcount == 1


async def note_use(db: Database, host_id: str, now: float, address: str) -> None:
    """Record when and from where a host's credential was last accepted."""
    async with db.engine.begin() as conn:
        await conn.execute(
            update(hosts)
            .where(hosts.c.id == host_id)
            .values(token_used_at=now, token_used_from=address[:64])
        )


async def bind_cert(db: Database, host_id: str, fingerprint: str | None) -> None:
    """Bind a host to a client-certificate fingerprint (None unbinds) or raise NotFound."""
    async with db.engine.begin() as conn:
        res = await conn.execute(
            update(hosts).where(hosts.c.id == host_id).values(cert_sha256=fingerprint)
        )
    if res.rowcount == 0:
        raise NotFound(f"store: no host {host_id!r}")


async def add_enroll_code(
    db: Database, host_id: str, code_hash: str, now: float, expires_at: float
) -> None:
    """Store a host's new enrollment code; its unused older codes stop working.
    Raise NotFound for an unknown host."""
    async with db.engine.begin() as conn:
        exists = (
            await conn.execute(select(hosts.c.id).where(hosts.c.id == host_id))
        ).scalar_one_or_none()
        if exists is None:
            raise NotFound(f"store: no host {host_id!r}")
        await conn.execute(
            delete(enroll_codes).where(
                enroll_codes.c.host_id == host_id, enroll_codes.c.used_at.is_(None)
            )
        )
        await conn.execute(
            insert(enroll_codes).values(
                code_hash=code_hash, host_id=host_id, created_at=now, expires_at=expires_at
            )
        )


async def redeem_enroll_code(
    db: Database, host_id: str, code_hash: str, new_hash: str, now: float, address: str
) -> str:
    """Exchange an enrollment code for a token in one transaction; return the outcome.

    1. The code must exist for this host ("wrong"), be unused ("used") and unexpired
       ("expired").
    2. It is marked used with a guarded UPDATE, so two racing agents cannot both win.
    3. The host's token becomes new_hash (an earlier token is retired as rotated).
    """
    async with db.engine.begin() as conn:
        row = (
            await conn.execute(select(enroll_codes).where(enroll_codes.c.code_hash == code_hash))
        ).first()
        if row is None or row.host_id != host_id:
            return "wrong"
        if row.used_at is not None:
            return "used"
        if row.expires_at <= now:
            return "expired"
        claimed = await conn.execute(
            update(enroll_codes)
            .where(enroll_codes.c.code_hash == code_hash, enroll_codes.c.used_at.is_(None))
            .values(used_at=now, used_from=address[:64])
        )
        if claimed.rowcount != 1:
            return "used"
        await _retire_current(conn, host_id, "rotated", now, None)
        await conn.execute(
            update(hosts)
            .where(hosts.c.id == host_id)
            .values(token_hash=new_hash, identity_state="active")
        )
    return "ok"
