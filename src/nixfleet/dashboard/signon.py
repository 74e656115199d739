"""Single sign-on for the dashboard: from the provider's verified claims to a user row.

1. The role comes from the provider's groups or claims (NIXFLEET_OIDC_ROLES), at every
   sign-in, so a change at the provider counts at the next one; no match and no default
   role is a refusal.
2. The user name comes from one claim (NIXFLEET_OIDC_USERNAME_CLAIM) and must be a valid
   NixFleet user name. The row is bound to the provider's subject (`sub`): a second
   account at the provider with the same name, or a local user's name, is refused.
3. A new user gets a row (source "oidc", no password) so the audit log names them and an
   admin can disable them; a disabled user is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from nixfleet.config import Settings
from nixfleet.core.errors import Conflict, ValidationError
from nixfleet.core.roles import Role, canonical_username
from nixfleet.core.secevents import AuthFactor
from nixfleet.core.signon import role_for
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.deps import is_https
from nixfleet.security.oidc import RelyingParty, SignOnError, Start
from nixfleet.storage import users as user_store

log = logging.getLogger("nixfleet.signon")
CALLBACK_PATH = "/login/oidc/callback"


@dataclass(frozen=True)
class SignedIn:
    user: user_store.User
    created: bool


class SignOn:
    """The dashboard's single sign-on: one per process, built from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.oidc_provider_name
        self.party = RelyingParty(
            settings.oidc_issuer,
            settings.oidc_client_id,
            settings.oidc_client_secret.get_secret_value(),
            settings.oidc_scopes,
            settings.oidc_timeout_s,
        )
        self.rules = settings.oidc_role_map
        self.default = (
            Role.parse(settings.oidc_default_role) if settings.oidc_default_role else None
        )

    def redirect_uri(self, request: Request) -> str:
        """Return the callback URL: as configured, or this dashboard's address as browsed."""
        if self.settings.oidc_redirect_uri:
            return self.settings.oidc_redirect_uri
        scheme = "https" if is_https(request) else "http"
        return f"{scheme}://{request.url.netloc}{CALLBACK_PATH}"

    async def start(self, request: Request) -> Start:
        return await self.party.start(self.redirect_uri(request))

    async def finish(
        self, ctx: Context, request: Request, code: str, verifier: str, nonce: str
    ) -> SignedIn:
        """Return the user the provider vouches for; raise SignOnError for a refusal."""
        claims = await self.party.finish(
            code, self.redirect_uri(request), verifier, nonce, self.settings.oidc_groups_claim
        )
        role = role_for(claims, self.rules, self.settings.oidc_groups_claim, self.default)
        username = self.username(claims)
        if role is None:
            raise SignOnError(
                AuthFactor.OIDC_UNMAPPED,
                f"signon: {username} has no NixFleet role: none of their groups is mapped to one",
                username,
            )
        return await self._user(ctx, username, str(claims["sub"]), role)

    def username(self, claims: dict[str, Any]) -> str:
        claim = self.settings.oidc_username_claim
        value = claims.get(claim)
        try:
            if not isinstance(value, str):
                raise ValidationError("signon: no name")
            return canonical_username(value)
        except ValidationError:
            raise SignOnError(
                AuthFactor.OIDC_USER,
                f"signon: the provider's {claim} claim is not a valid NixFleet user name",
            ) from None

    async def _user(self, ctx: Context, username: str, subject: str, role: Role) -> SignedIn:
        user = await user_store.get(ctx.db, username)
        created = False
        if user is None:
            try:
                user = await user_store.add_external(ctx.db, username, subject, role)
                created = True
            except Conflict:  # the same user's second tab, a moment ago
                user = await user_store.get(ctx.db, username)
                if user is None:
                    raise
        if user.source != "oidc":
            raise SignOnError(
                AuthFactor.OIDC_USER,
                f"signon: {username} is a local user here; an admin must rename or remove"
                " that account before it can sign in through the provider",
                username,
            )
        if user.subject != subject:
            raise SignOnError(
                AuthFactor.OIDC_USER,
                f"signon: the name {username} belongs to another account of the provider",
                username,
            )
        if user.disabled:
            raise SignOnError(AuthFactor.OIDC_DISABLED, f"signon: {username} is disabled", username)
        if user.role != role:
            try:
                await user_store.change(ctx.db, username, role=role)
            except Conflict:  # the provider would demote the last enabled admin
                raise SignOnError(
                    AuthFactor.OIDC_UNMAPPED,
                    f"signon: {username} is the last admin; the provider's role for them"
                    f" ({role.label}) would leave no admin",
                    username,
                ) from None
            user = await user_store.get(ctx.db, username) or user
        return SignedIn(user, created)
