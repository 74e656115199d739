"""`nixfleet admin user`: add, list, disable, set-role and passwd, each with its audit entry.

Passwords are read from stdin (twice on a terminal), never from the command line, where
every user of the machine can read them in the process list.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from nixfleet.cli.common import fail, with_database
from nixfleet.core.errors import NixFleetError

if TYPE_CHECKING:
    from nixfleet.storage.db import Database

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Manage the dashboard's users.")
ROLE_HELP = "viewer, operator or admin"


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        fail("admin: the two passwords differ")
    return first


def _hashed_new_password() -> str:
    from nixfleet.security import passwords

    password = _read_password()
    try:
        passwords.check_new_password(password)
    except NixFleetError as exc:
        fail(str(exc))
    return passwords.hash_password(password)


@app.command("add")
def user_add(
    username: str,
    role: Annotated[str, typer.Option(help=ROLE_HELP)] = "viewer",
    totp: Annotated[bool, typer.Option(help="Require a TOTP code; print its secret.")] = False,
) -> None:
    """Add a user; the password is read from stdin."""
    from nixfleet.core.roles import Role, canonical_username
    from nixfleet.security import totp as totp_codes
    from nixfleet.storage import users as user_store

    try:
        name, parsed = canonical_username(username), Role.parse(role)
    except NixFleetError as exc:
        fail(str(exc))
    hashed = _hashed_new_password()
    secret = totp_codes.new_secret() if totp else None
    _with_db(
        lambda db: user_store.add(db, name, hashed, parsed, secret),
        ("user_add", {"user": name, "role": parsed.label}),
    )
    typer.echo(f"added {name} ({parsed.label})")
    if secret:
        typer.echo("shown once; TOTP secret:", err=True)
        typer.echo(totp_codes.provisioning_uri(secret, name))


@app.command("list")
def user_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List users (never their password hashes or TOTP secrets)."""
    from nixfleet.storage import users as user_store

    found = _with_db(user_store.list_all)
    for user in found:
        row = user.public()
        if as_json:
            typer.echo(json.dumps(row))
        else:
            state = "disabled" if user.disabled else "active"
            typer.echo(f"{user.username:<24} {user.role.label:<9} {state}")


@app.command("disable")
def user_disable(
    username: str, enable: Annotated[bool, typer.Option(help="Enable again.")] = False
) -> None:
    """Disable a user: their sessions end at once (open streams within seconds)."""
    _change(username, ("enabled" if enable else "disabled"), disabled=not enable)


@app.command("set-role")
def user_set_role(username: str, role: Annotated[str, typer.Argument(help=ROLE_HELP)]) -> None:
    """Give a user another role (it applies to their next request)."""
    from nixfleet.core.roles import Role

    try:
        parsed = Role.parse(role)
    except NixFleetError as exc:
        fail(str(exc))
    _change(username, f"now {parsed.label}", role=parsed)


@app.command("passwd")
def user_passwd(username: str) -> None:
    """Set a user's password (read from stdin); their sessions end."""
    _change(username, "password set", password_hash=_hashed_new_password())


def _change(username: str, what: str, **values: Any) -> None:
    from nixfleet.core.roles import Role
    from nixfleet.storage import sessions as session_store
    from nixfleet.storage import users as user_store

    name = username.strip().lower()

    async def change(db: Database) -> None:
        await user_store.change(db, name, **values)
        if values.get("disabled") or "password_hash" in values:
            await session_store.delete_for_user(db, name)

    shown = {k: (v.label if isinstance(v, Role) else v) for k, v in values.items()}
    if shown.pop("password_hash", None):
        shown["password"] = "set"  # noqa: S105 - says a password was set, is none
    _with_db(change, ("user_change", {"user": name, **shown}))
    typer.echo(f"{name}: {what}")


def _with_db(
    action: Callable[[Database], Awaitable[T]], audit: tuple[str, dict[str, Any]] | None = None
) -> T:
    """Run action on the dashboard's database; audit it as the Unix user (`cli:<name>`)."""
    return with_database(
        lambda _settings, db: action(db), (audit[0], {"detail": audit[1]}) if audit else None
    )
