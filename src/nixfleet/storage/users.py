"""Where users are stored: name, argon2id hash, TOTP secret, role, whether disabled."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select, update

from nixfleet.core.errors import Conflict, NotFound
from nixfleet.core.roles import Role
from nixfleet.storage.db import Database
from nixfleet.storage.tables import users


@dataclass(frozen=True)
class User:
    username: str
    password_hash: str
    totp_secret: str | None
    role: Role
    disabled: bool
    created_at: float
    source: str = "local"  # or "oidc": signs in through the provider, has no password
    subject: str | None = None  # the provider's `sub` for the user (oidc only)

    def public(self) -> dict[str, object]:
        """Return what the API and the CLI show: never the hash or the TOTP secret."""
        return {
            "username": self.username,
            "role": self.role.label,
            "disabled": self.disabled,
            "totp": self.totp_secret is not None,
            "source": self.source,
            "created_at": self.created_at,
        }


def _user(row: object) -> User:
    m = row._mapping  # type: ignore[attr-defined]
    return User(
        m["username"],
        m["password_hash"],
        m["totp_secret"],
        Role.parse(m["role"]),
        bool(m["disabled"]),
        m["created_at"],
        m["source"],
        m["subject"],
    )


async def get(db: Database, username: str) -> User | None:
    """Return the user named username, or None."""
    async with db.reader.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.username == username))).first()
    return _user(row) if row else None


async def list_all(db: Database) -> list[User]:
    """Return every user, by name."""
    async with db.reader.connect() as conn:
        rows = await conn.execute(select(users).order_by(users.c.username))
    return [_user(row) for row in rows]


async def any_totp(db: Database) -> bool:
    """Return whether any enabled user has a TOTP secret (the login form asks for a code)."""
    query = select(func.count()).where(users.c.totp_secret.is_not(None), ~users.c.disabled)
    async with db.reader.connect() as conn:
        return bool((await conn.execute(query)).scalar())


async def add(
    db: Database, username: str, password_hash: str, role: Role, totp_secret: str | None = None
) -> User:
    """Store a new user; raise Conflict when the name is taken."""
    now = time.time()
    values = {
        "username": username,
        "password_hash": password_hash,
        "totp_secret": totp_secret,
        "role": role.label,
        "disabled": False,
        "created_at": now,
        "updated_at": now,
    }
    async with db.engine.begin() as conn:
        added = await conn.execute(
            db.insert_ignore(users).values(**values).returning(users.c.username)
        )
        if added.first() is None:
            raise Conflict(f"users: user {username!r} already exists")
    return User(username, password_hash, totp_secret, role, False, now)


async def add_external(db: Database, username: str, subject: str, role: Role) -> User:
    """Store a user who signs in through the provider (no password); Conflict if taken."""
    now = time.time()
    values = {
        "username": username,
        "password_hash": "",  # no argon2 hash: a password login as this user always fails
        "totp_secret": None,
        "role": role.label,
        "disabled": False,
        "created_at": now,
        "updated_at": now,
        "source": "oidc",
        "subject": subject,
    }
    async with db.engine.begin() as conn:
        added = await conn.execute(
            db.insert_ignore(users).values(**values).returning(users.c.username)
        )
        if added.first() is None:
            raise Conflict(f"users: user {username!r} already exists")
    return User(username, "", None, role, False, now, "oidc", subject)


async def seed_admin(
    db: Database, username: str, password_hash: str, totp_secret: str | None
) -> bool:
    """Return True if the env-configured admin was added as the first user.

    Only into an empty table: once users exist they are managed in the dashboard or with
    `nixfleet admin user`, and a changed environment must not take an account back.
    """
    if not password_hash:
        return False
    async with db.engine.begin() as conn:
        await db.write_lock(conn, "users")
        if (await conn.execute(select(func.count()).select_from(users))).scalar():
            return False
        now = time.time()
        await conn.execute(
            db.insert_ignore(users).values(
                username=username,
                password_hash=password_hash,
                totp_secret=totp_secret or None,
                role=Role.ADMIN.label,
                disabled=False,
                created_at=now,
                updated_at=now,
            )
        )
    return True


async def change(db: Database, username: str, **values: object) -> None:
    """Update username's role, password hash, TOTP secret or disabled flag.

    Raise NotFound for an unknown user, and Conflict when the change would leave no
    enabled admin (nobody could manage users any more).
    """
    if "role" in values and isinstance(values["role"], Role):
        values["role"] = values["role"].label
    async with db.engine.begin() as conn:
        await db.write_lock(conn, "users")
        done = await conn.execute(
            update(users)
            .where(users.c.username == username)
            .values(updated_at=time.time(), **values)
        )
        if done.rowcount != 1:
            raise NotFound(f"users: no user {username!r}")
        admins = select(func.count()).where(users.c.role == Role.ADMIN.label, ~users.c.disabled)
        if not (await conn.execute(admins)).scalar():  # raising rolls the update back
            raise Conflict("users: that would leave no enabled admin")
