"""`nixfleet admin token`: create, list and revoke API tokens, each with its audit entry.

`create` prints the token alone on stdout (so `$(nixfleet admin token create …)` keeps
it) and everything else on stderr; it is shown this once, the database keeps its HMAC.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from nixfleet.cli.common import fail, with_database
from nixfleet.core.errors import NixFleetError

if TYPE_CHECKING:
    from nixfleet.config import Settings
    from nixfleet.core.apitokens import TokenScope
    from nixfleet.core.roles import Role
    from nixfleet.storage.api_tokens import ApiToken
    from nixfleet.storage.db import Database

app = typer.Typer(no_args_is_help=True, help="Manage API tokens (Bearer nft_…).")


@app.command("create")
def token_create(
    name: str,
    role: Annotated[str, typer.Option(help="viewer, operator or admin")] = "viewer",
    user: Annotated[str, typer.Option(help="The user it belongs to (its role caps it).")] = "",
    service: Annotated[bool, typer.Option(help="A service token: no user's.")] = False,
    host: Annotated[list[str] | None, typer.Option(help="Only this host (repeat).")] = None,
    labels: Annotated[str, typer.Option(help="Only hosts matching: role=web,tier=1.")] = "",
    kind: Annotated[list[str] | None, typer.Option(help="Only this command (repeat).")] = None,
    expires: Annotated[str, typer.Option(help="Lifetime: 30d, 12h, 90m (≤ 366d).")] = "90d",
) -> None:
    """Create a token for a user or a service and print it (shown once)."""
    from nixfleet.core import apitokens as rules
    from nixfleet.core.roles import Role, canonical_username

    if bool(user) == service:
        fail("admin: name the token's owner with --user, or make it a --service token")
    try:
        parsed = Role.parse(role)
        scope = rules.scope_from(host or (), labels, kind or ())
        lifetime = rules.lifetime_s(expires)
        label, owner = rules.canonical_name(name), canonical_username(user) if user else None
    except NixFleetError as exc:
        fail(str(exc))

    # Filled in once the token exists: the audit entry is written after the action.
    detail: dict[str, object] = {"name": label, "owner": owner or "service"}

    async def create(settings: Settings, db: Database) -> tuple[ApiToken, str]:
        made = await _create(settings, db, label, owner, parsed, scope, lifetime)
        detail.update(token=made[0].id, role=parsed.label, scope=scope.described())
        return made

    token, secret = with_database(create, ("api_token_add", {"detail": detail}))
    typer.echo(f"created {token.id} ({token.actor}, {parsed.label}; shown once):", err=True)
    typer.echo(secret)


async def _create(
    settings: Settings,
    db: Database,
    name: str,
    owner: str | None,
    role: Role,
    scope: TokenScope,
    lifetime: int,
) -> tuple[ApiToken, str]:
    import getpass

    from nixfleet.core.apitokens import check_role
    from nixfleet.core.errors import NotFound
    from nixfleet.security import tokens
    from nixfleet.storage import api_tokens as store
    from nixfleet.storage import users as user_store
    from nixfleet.storage.api_tokens import ApiToken

    if owner is not None:
        found = await user_store.get(db, owner)
        if found is None or found.disabled:
            raise NotFound(f"admin: no enabled user {owner!r}")
        check_role(role, found.role)
    now = time.time()
    token = ApiToken(
        tokens.new_api_token_id(), name, owner, f"cli:{getpass.getuser()}"[:100], role, scope,
        now, now + lifetime, None, None, None,
    )  # fmt: skip
    secret = tokens.new_api_token()
    key = settings.agent_token_hash_secret.get_secret_value()
    await store.add(db, token, tokens.hash_agent_token(key, secret))
    return token, secret


@app.command("list")
def token_list(
    user: Annotated[str, typer.Option(help="Only this user's tokens.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """List tokens (never their secrets): id, owner, role, scope, expiry, last use."""
    from nixfleet.storage import api_tokens as store

    owner = user.strip().lower() or None
    found = with_database(lambda _s, db: store.listed(db, owner, everyone=owner is None))
    now = time.time()
    for token in found:
        if as_json:
            typer.echo(json.dumps(token.public()))
            continue
        state = "revoked" if token.revoked_at else "expired" if token.expires_at <= now else ""
        used = time.strftime("%Y-%m-%d %H:%M", time.gmtime(token.last_used_at or 0))
        typer.echo(
            f"{token.id}  {token.name:<20} {token.owner or 'service':<16} {token.role.label:<9}"
            f" {state or 'expires ' + time.strftime('%Y-%m-%d', time.gmtime(token.expires_at))}"
            f"  used {used if token.last_used_at else 'never'}  {token.scope.described()}"
        )


@app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token: its next request is refused, its open streams end within seconds."""
    from nixfleet.storage import api_tokens as store

    tid = token_id.strip()[:16]
    token = with_database(
        lambda _s, db: store.revoke(db, tid, time.time()),
        ("api_token_revoke", {"detail": {"token": tid}}),
    )
    typer.echo(f"revoked {token.id} ({token.actor})")
