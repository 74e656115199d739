"""Where API tokens are stored: the HMAC (also the lookup key), owner, role, scope, expiry,
revocation and last use. Never the token itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, or_, select, update

from nixfleet.core.apitokens import TokenScope, actor, scope_of
from nixfleet.core.errors import NotFound
from nixfleet.core.roles import Role
from nixfleet.storage.db import Database
from nixfleet.storage.tables import api_tokens, users


@dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    owner: str | None  # None: a service token
    created_by: str
    role: Role
    scope: TokenScope
    created_at: float
    expires_at: float
    revoked_at: float | None
    last_used_at: float | None
    last_used_from: str | None

    @property
    def actor(self) -> str:
        return actor(self.id, self.owner, self.name)

    def public(self) -> dict[str, Any]:
        """Return what the API and the CLI list: never the token or its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "service": self.owner is None,
            "created_by": self.created_by,
            "role": self.role.label,
            "scope": self.scope.stored(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
            "last_used_from": self.last_used_from,
        }


_COLUMNS = [c for c in api_tokens.c if c.name != "token_hash"]


def _token(row: Any) -> ApiToken:
    m = row._mapping
    return ApiToken(
        m["id"],
        m["name"],
        m["owner"],
        m["created_by"],
        Role.parse(m["role"]),
        scope_of(m["scope"]),
        m["created_at"],
        m["expires_at"],
        m["revoked_at"],
        m["last_used_at"],
        m["last_used_from"],
    )


async def add(db: Database, token: ApiToken, token_hash: str) -> None:
    """Store a new token under the HMAC of its secret."""
    values = {c.name: getattr(token, c.name) for c in _COLUMNS}
    values.update(role=token.role.label, scope=token.scope.stored(), token_hash=token_hash)
    async with db.engine.begin() as conn:
        await conn.execute(insert(api_tokens).values(**values))


async def by_hash(db: Database, token_hash: str) -> ApiToken | None:
    """Return the token whose secret hashes to token_hash (revoked and expired too)."""
    query = select(*_COLUMNS).where(api_tokens.c.token_hash == token_hash)
    async with db.reader.connect() as conn:
        row = (await conn.execute(query)).first()
    return None if row is None else _token(row)


async def get(db: Database, token_id: str, owner: str | None = None) -> ApiToken:
    """Return the token token_id (of owner, when given) or raise NotFound."""
    query = select(*_COLUMNS).where(api_tokens.c.id == token_id)
    if owner is not None:
        query = query.where(api_tokens.c.owner == owner)
    async with db.reader.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"tokens: no token {token_id[:16]!r}")
    return _token(row)


async def listed(db: Database, owner: str | None, everyone: bool = False) -> list[ApiToken]:
    """Return owner's tokens, newest first; everyone: every token, service ones included."""
    query = select(*_COLUMNS).order_by(api_tokens.c.created_at.desc())
    if not everyone:
        query = query.where(api_tokens.c.owner == owner)
    async with db.reader.connect() as conn:
        return [_token(row) for row in await conn.execute(query)]


async def revoke(db: Database, token_id: str, now: float, owner: str | None = None) -> ApiToken:
    """Revoke token_id (only owner's, when given); an already revoked one stays as it was.

    Raise NotFound for an unknown token or another owner's.
    """
    query = update(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
    if owner is not None:
        query = query.where(api_tokens.c.owner == owner)
    async with db.engine.begin() as conn:
        await conn.execute(query.values(revoked_at=now))
    return await get(db, token_id, owner)


async def note_use(db: Database, token_id: str, now: float, address: str) -> None:
    """Record when and from where the token was last accepted."""
    async with db.engine.begin() as conn:
        await conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id)
            .values(last_used_at=now, last_used_from=address[:64])
        )


async def live_of(db: Database, token_ids: set[str], now: float) -> set[str]:
    """Return which of token_ids are unrevoked, unexpired, and not a disabled user's."""
    if not token_ids:
        return set()
    t = api_tokens
    query = (
        select(t.c.id)
        .select_from(t.outerjoin(users, users.c.username == t.c.owner))
        .where(
            t.c.id.in_(token_ids),
            t.c.revoked_at.is_(None),
            t.c.expires_at > now,
            or_(t.c.owner.is_(None), ~users.c.disabled),
        )
    )
    async with db.reader.connect() as conn:
        return {row.id for row in await conn.execute(query)}
