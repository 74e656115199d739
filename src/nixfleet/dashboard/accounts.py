"""Managing users from the dashboard: add, change role, disable, set a password.

Each change is stored, then recorded in the audit log naming who made it; disabling a
user deletes their sessions and closes their open event streams at once.
"""

from __future__ import annotations

import asyncio

from nixfleet.core.errors import NotFound
from nixfleet.core.roles import Role, canonical_username
from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.dashboard.context import Context
from nixfleet.security import passwords, totp
from nixfleet.storage import sessions as session_store
from nixfleet.storage import users as user_store


async def add(
    ctx: Context, actor: str, address: str, name: str, password: str, role: Role, with_totp: bool
) -> tuple[user_store.User, str | None]:
    """Return the new user and its TOTP secret (shown once), if one was asked for."""
    username = canonical_username(name)
    passwords.check_new_password(password)
    hashed = await asyncio.to_thread(passwords.hash_password, password)
    secret = totp.new_secret() if with_totp else None
    user = await user_store.add(ctx.db, username, hashed, role, secret)
    await ctx.audit.record(
        actor, "user_add", address=address, detail={"user": username, "role": role.label}
    )
    _announce(ctx, actor, address, username, "added")
    return user, secret


async def change(
    ctx: Context,
    actor: str,
    address: str,
    username: str,
    role: Role | None = None,
    disabled: bool | None = None,
    password: str | None = None,
) -> user_store.User:
    """Return the user after the change (only the fields given change)."""
    values: dict[str, object] = {}
    if role is not None:
        values["role"] = role
    if disabled is not None:
        values["disabled"] = disabled
    if password is not None:
        passwords.check_new_password(password)
        values["password_hash"] = await asyncio.to_thread(passwords.hash_password, password)
    if values:
        await user_store.change(ctx.db, username, **values)
        if disabled or password is not None:
            await end_sessions(ctx, username)
        shown = {k: (v.label if isinstance(v, Role) else v) for k, v in values.items()}
        shown.pop("password_hash", None)
        detail = {"user": username, **shown, **({"password": "set"} if password else {})}
        await ctx.audit.record(actor, "user_change", address=address, detail=detail)
        _announce(ctx, actor, address, username, ",".join(sorted(detail)))
    user = await user_store.get(ctx.db, username)
    if user is None:
        raise NotFound(f"users: no user {username!r}")
    return user


async def end_sessions(ctx: Context, username: str) -> None:
    """Delete every session of username; their open event streams close now."""
    for id_hash in await session_store.delete_for_user(ctx.db, username):
        await ctx.bus.publish({"type": "session_ended", "id_hash": id_hash})


def _announce(ctx: Context, actor: str, address: str, username: str, what: str) -> None:
    ctx.security.emit(
        SecurityEvent(
            EventKind.USER_CHANGED,
            outcome="ok",
            address=address,
            user=actor,
            detail=f"{username}: {what}"[:200],
        )
    )
