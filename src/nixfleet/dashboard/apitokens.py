"""API tokens in the dashboard: issuing, listing and revoking them, and holding a token's
caller to its scope.

Who a Bearer request comes from is settled in `deps.token_caller`; `access.authorize`
then holds the token to its role and calls `check_route` here. Routes that queue or
cancel commands check the hosts and the kind themselves with `check_scope`, because
those are in the body or behind an id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.requests import HTTPConnection

from nixfleet.core.apitokens import TokenScope, check_role
from nixfleet.core.commands import CommandKind, parse_kind
from nixfleet.core.errors import Forbidden, InvalidHostId
from nixfleet.core.hostid import canonical_host_id
from nixfleet.core.labels import merged
from nixfleet.core.roles import Role
from nixfleet.core.secevents import EventKind, SecurityEvent
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.deps import SAFE_METHODS, Session, client_address
from nixfleet.security import tokens
from nixfleet.storage import api_tokens as store
from nixfleet.storage import commands as command_store
from nixfleet.storage import hosts as host_store
from nixfleet.storage.api_tokens import ApiToken


async def create(
    ctx: Context,
    who: Session,
    address: str,
    name: str,
    role: Role,
    scope: TokenScope,
    lifetime_s: int,
    service: bool = False,
) -> tuple[ApiToken, str]:
    """Return the new token and its secret (shown once, never stored).

    A token's role is at most its creator's; only admins make service tokens.
    """
    check_role(role, who.role)
    if service and who.role < Role.ADMIN:
        raise Forbidden("tokens: only admins make service tokens")
    secret = tokens.new_api_token()
    now = time.time()
    token = ApiToken(
        tokens.new_api_token_id(),
        name,
        None if service else who.username,
        who.username,
        role,
        scope,
        now,
        now + lifetime_s,
        None,
        None,
        None,
    )
    key = ctx.settings.agent_token_hash_secret.get_secret_value()
    await store.add(ctx.db, token, tokens.hash_agent_token(key, secret))
    detail = {
        "token": token.id,
        "name": name,
        "owner": token.owner or "service",
        "role": role.label,
        "scope": scope.described(),
        "expires_at": round(token.expires_at),
    }
    await ctx.audit.record(who.username, "api_token_add", address=address, detail=detail)
    _announce(ctx, who, address, token, "added")
    return token, secret


async def listed(ctx: Context, who: Session, everyone: bool) -> list[ApiToken]:
    """Return who's own tokens; everyone (admins only): every token, service ones too."""
    if everyone and who.role < Role.ADMIN:
        raise Forbidden("tokens: only admins list every token")
    return await store.listed(ctx.db, who.username, everyone)


async def revoke(ctx: Context, who: Session, address: str, token_id: str) -> ApiToken:
    """Revoke a token (admins: any; others: their own); its open streams end now."""
    owner = None if who.role >= Role.ADMIN else who.username
    token = await store.revoke(ctx.db, token_id, time.time(), owner)
    await ctx.bus.publish({"type": "session_ended", "id_hash": f"token:{token.id}"})
    detail = {"token": token.id, "name": token.name, "owner": token.owner or "service"}
    await ctx.audit.record(who.username, "api_token_revoke", address=address, detail=detail)
    _announce(ctx, who, address, token, "revoked")
    return token


def _announce(ctx: Context, who: Session, address: str, token: ApiToken, what: str) -> None:
    ctx.security.emit(
        SecurityEvent(
            EventKind.API_TOKEN,
            outcome="ok",
            address=address,
            user=who.username,
            detail=f"{what} token:{token.id}",
        )
    )


async def check_route(conn: HTTPConnection, key: str, needs_scope: str, who: Session) -> None:
    """Refuse a token on a route its scope does not reach (a security event names it).

    Reading follows the role. A change needs a route that checks scope: "host" routes
    (the host is in the path) for a token scoped by host alone, "command" routes (they
    call `check_scope` with the body's hosts and kind) for any scoped token.
    """
    token = who.token
    if token is None or conn.scope.get("method") in SAFE_METHODS or not token.scope.narrowed:
        return
    if needs_scope == "command" or (needs_scope == "host" and not token.scope.kinds):
        host_id = conn.path_params.get("host_id")
        if host_id is not None:
            await check_scope(conn.app.state.ctx, conn, who, [host_id])
        return
    raise _out_of_scope(conn, who, key, "this token's scope does not reach this route")


async def check_scope(
    ctx: Context,
    conn: HTTPConnection,
    who: Session,
    host_ids: Iterable[str],
    kind: CommandKind | None = None,
) -> None:
    """Raise Forbidden unless who's token (if any) covers every host and the kind.

    A label selector is matched against each host's labels as they are now (both
    owners', core.labels.merged); a host that does not exist matches no selector.
    """
    token = who.token
    if token is None or not token.scope.narrowed:
        return
    scope = token.scope
    if kind is not None and not scope.allows_kind(kind):
        raise _out_of_scope(conn, who, f"kind {kind.value}", f"this token may not {kind.value}")
    wanted = sorted({_canonical(h) for h in host_ids})
    labels: dict[str, dict[str, str]] = {}
    if scope.selector:
        rows = await host_store.get_many(ctx.db, wanted)
        labels = {r["id"]: merged(r.get("labels"), r.get("host_labels"))[0] for r in rows}
    outside = [h for h in wanted if not scope.covers_host(h, labels.get(h))]
    if outside:
        shown = ", ".join(outside[:5]) + (", …" if len(outside) > 5 else "")
        raise _out_of_scope(
            conn, who, f"host {outside[0]}", f"this token's scope does not cover {shown}"
        )


def _canonical(host_id: str) -> str:
    try:
        return canonical_host_id(host_id)
    except InvalidHostId:
        return host_id  # not a host id: no scope covers it


def _out_of_scope(conn: HTTPConnection, who: Session, what: str, message: str) -> Forbidden:
    conn.app.state.ctx.security.emit(
        SecurityEvent(
            EventKind.ACCESS_DENIED,
            address=client_address(conn),
            user=who.username,
            detail=f"scope: {what}"[:64],
        )
    )
    return Forbidden(f"access: {message}")


async def check_command(ctx: Context, conn: HTTPConnection, who: Session, command_id: str) -> None:
    """Raise Forbidden unless who's token covers the command's host and kind."""
    if who.token is None or not who.token.scope.narrowed:
        return
    cmd = await command_store.get(ctx.db, command_id[:64])
    await check_scope(ctx, conn, who, [cmd["host_id"]], parse_kind(cmd["kind"]))


async def check_rollout(ctx: Context, conn: HTTPConnection, who: Session, rollout_id: str) -> None:
    """Raise Forbidden unless who's token covers every host of the rollout and its kind."""
    if who.token is None or not who.token.scope.narrowed:
        return
    ro = await ctx.rollouts.view(rollout_id[:64])
    hosts = [h["host_id"] for wave in ro["waves"] for h in wave["hosts"]]
    await check_scope(ctx, conn, who, hosts, parse_kind(ro["kind"]))
