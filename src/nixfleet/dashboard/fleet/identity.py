"""Agent identity: who an agent is, and the credentials that say so.

Every host has its own token (stored as an HMAC), obtained once: shown when issued, or
exchanged for a one-time enrollment code, or, during a migration, handed to an agent that
connected with the deprecated shared token. Rotation and revocation retire the old token at
once (or after an overlap) and drop a live connection that still uses it. A host may also
be bound to a client-certificate fingerprint; then its token alone is not enough.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nixfleet.config import Settings
from nixfleet.core.errors import Conflict
from nixfleet.core.framing import CLOSE_HOST_REMOVED, CLOSE_TOKEN_REVOKED, CLOSE_TOKEN_ROTATED
from nixfleet.core.hostid import canonical_host_id, is_host_id
from nixfleet.core.secevents import AuthFactor
from nixfleet.security import tokens
from nixfleet.security.clientcert import parse_fingerprint
from nixfleet.storage import changes
from nixfleet.storage import credentials as store
from nixfleet.storage import hosts as host_store
from nixfleet.storage.bus import EventBus
from nixfleet.storage.db import Database

log = logging.getLogger("nixfleet.identity")


@dataclass(frozen=True)
class AgentAuth:
    """The verdict on one handshake. `factor` and `reason` say why it was refused."""

    host_id: str | None
    credential: str = ""  # the HMAC the connection authenticated with
    migrate: bool = False  # shared token: hand the agent its own token over the connection
    factor: AuthFactor | None = None
    reason: str = ""


@dataclass
class LinkVerdicts:
    """What a live-credential check found (AgentIdentity.check_links)."""

    closes: dict[str, int] = field(default_factory=dict)  # host id → close code
    valid_until: dict[str, float] = field(default_factory=dict)  # overlap ends, per host


def _refuse(factor: AuthFactor, reason: str) -> AgentAuth:
    return AgentAuth(None, factor=factor, reason=reason)


class AgentIdentity:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        bus: EventBus,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.db = db
        self.bus = bus
        self.clock = clock
        self._secret = settings.agent_token_hash_secret.get_secret_value()
        self._shared = settings.shared_agent_token_hash.get_secret_value()

    def hash(self, credential: str) -> str:
        return tokens.hash_agent_token(self._secret, credential)

    # --- the handshake --------------------------------------------------------------
    async def authenticate(
        self, raw_id: str, token: str, cert_sha256: str | None, address: str
    ) -> AgentAuth:
        """Return who the agent is, or why not.

        1. The token's HMAC names the host whose current token it is; another host's
           token is a cross-host attempt.
        2. A retired token is refused as rotated or revoked, unless a rotation's overlap
           still covers it.
        3. The shared token is accepted only while enabled, for a host without a token.
        4. A host bound to a certificate also needs the TLS client certificate.
        """
        if not is_host_id(raw_id) or not token:
            return _refuse(AuthFactor.AGENT_TOKEN, "missing host id or token")
        presented = self.hash(token)
        verdict = await self._by_current(raw_id, presented)
        if verdict is None:
            verdict = await self._by_retired(raw_id, presented)
        if verdict is None and self._shared and hmac.compare_digest(self._shared, presented):
            verdict = await self._by_shared(raw_id)
        if verdict is None:
            return _refuse(AuthFactor.AGENT_TOKEN, "unknown token")
        if verdict.host_id is not None:
            ident = await store.identity(self.db, verdict.host_id)
            bound = ident.cert_sha256 if ident else None
            if bound and not hmac.compare_digest(bound, cert_sha256 or ""):
                why = "no client certificate" if cert_sha256 is None else "wrong certificate"
                return _refuse(AuthFactor.CLIENT_CERT, why)
            await store.note_use(self.db, verdict.host_id, self.clock(), address)
        return verdict

    async def _by_current(self, raw_id: str, presented: str) -> AgentAuth | None:
        owner = await store.by_token_hash(self.db, presented)
        if owner is None or owner.token_hash is None:
            return None
        if not hmac.compare_digest(owner.token_hash, presented):
            return None
        if owner.host_id != raw_id:
            return _refuse(AuthFactor.CROSS_HOST, f"token belongs to {owner.host_id}")
        return AgentAuth(raw_id, credential=presented)

    async def _by_retired(self, raw_id: str, presented: str) -> AgentAuth | None:
        row = await store.retired(self.db, presented)
        if row is None:
            return None
        if row["host_id"] != raw_id:
            return _refuse(AuthFactor.CROSS_HOST, f"retired token of {row['host_id']}")
        if row["reason"] == "revoked":
            return _refuse(AuthFactor.REVOKED_TOKEN, "token was revoked")
        if row["valid_until"] is not None and row["valid_until"] > self.clock():
            return AgentAuth(raw_id, credential=presented)
        return _refuse(AuthFactor.ROTATED_TOKEN, "token was rotated out")

    async def _by_shared(self, raw_id: str) -> AgentAuth:
        if not self.settings.allow_shared_token:
            return _refuse(AuthFactor.SHARED_TOKEN, "the shared token is disabled")
        ident = await store.identity(self.db, raw_id)
        if ident is None:
            if not self.settings.auto_provision:
                return _refuse(AuthFactor.SHARED_TOKEN, "unknown host and auto-provision is off")
            with contextlib.suppress(Conflict):  # another agent's handshake won the race
                await host_store.add(self.db, raw_id, None, self.clock(), {})
            log.warning("identity: auto-provisioned host %s (shared token)", raw_id)
            ident = await store.identity(self.db, raw_id)
        if ident is None or ident.identity_state != "none":
            return _refuse(AuthFactor.SHARED_TOKEN, "host already has its own token")
        return AgentAuth(raw_id, credential=self._shared, migrate=True)

    async def changes_seen(self) -> int:
        """Return the credential change counter: it moves with every rotation, revocation,
        enrollment, first token or host removal, made by any process."""
        return await changes.read(self.db, changes.CREDENTIALS)

    async def check_links(self, credentials: dict[str, str]) -> LinkVerdicts:
        """Judge each connected host's credential (host id → credential HMAC): the close
        code of each that stopped being valid, and when each one still valid only by a
        rotation's overlap stops (that happens without any write to notice)."""
        current = await store.identities(self.db, list(credentials))
        verdicts = LinkVerdicts()
        for host_id, cred in credentials.items():
            ident = current.get(host_id)
            if ident is None:
                verdicts.closes[host_id] = CLOSE_HOST_REMOVED
            elif ident.token_hash == cred:
                continue
            elif cred == self._shared:
                if not (self.settings.allow_shared_token and ident.identity_state == "none"):
                    verdicts.closes[host_id] = CLOSE_TOKEN_ROTATED
            else:
                row = await store.retired(self.db, cred)
                if row is None or row["reason"] == "revoked":
                    verdicts.closes[host_id] = CLOSE_TOKEN_REVOKED
                elif row["valid_until"] is None or row["valid_until"] <= self.clock():
                    verdicts.closes[host_id] = CLOSE_TOKEN_ROTATED
                else:
                    verdicts.valid_until[host_id] = row["valid_until"]
        return verdicts

    # --- issuing and retiring -------------------------------------------------------
    async def issue_enroll_code(self, raw_id: str) -> tuple[str, float]:
        """Return a fresh one-time enrollment code for the host and when it expires."""
        host_id = canonical_host_id(raw_id)
        code = tokens.new_enroll_code()
        now = self.clock()
        expires = now + self.settings.enroll_code_ttl_s
        await store.add_enroll_code(self.db, host_id, self.hash(code), now, expires)
        return code, expires

    async def enroll(self, raw_id: str, code: str, address: str) -> tuple[str | None, str]:
        """Return (token, "ok") for a good code, else (None, why: wrong, used, expired)."""
        if not is_host_id(raw_id) or not code:
            return None, "wrong"
        token = tokens.new_agent_token()
        outcome = await store.redeem_enroll_code(
            self.db, raw_id, self.hash(code), self.hash(token), self.clock(), address
        )
        if outcome != "ok":
            return None, outcome
        await self._drop(raw_id, CLOSE_TOKEN_ROTATED, "a new token was enrolled")
        return token, outcome

    async def rotate(self, raw_id: str, overlap_s: int | None = None) -> str:
        """Return a new token; the old one stops at once, or after overlap_s seconds."""
        host_id = canonical_host_id(raw_id)
        overlap = self.settings.token_overlap_s if overlap_s is None else overlap_s
        token = tokens.new_agent_token()
        now = self.clock()
        until = now + overlap if overlap > 0 else None
        await store.replace_token(self.db, host_id, self.hash(token), now, until)
        if until is None:
            await self._drop(host_id, CLOSE_TOKEN_ROTATED, "agent token rotated")
        return token

    async def revoke(self, raw_id: str) -> None:
        """Make the host's token (and pending codes) worthless and drop its agent."""
        host_id = canonical_host_id(raw_id)
        await store.revoke(self.db, host_id, self.clock())
        await self._drop(host_id, CLOSE_TOKEN_REVOKED, "agent token revoked")

    def new_token(self) -> tuple[str, str]:
        """Return a fresh per-host token and its HMAC (for a shared-token agent)."""
        token = tokens.new_agent_token()
        return token, self.hash(token)

    async def commit_migration(self, host_id: str, credential: str) -> bool:
        """Make credential the host's first token, once the agent said it saved it."""
        return await store.claim_first_token(self.db, host_id, credential)

    async def bind_cert(self, raw_id: str, fingerprint: str | None) -> str | None:
        """Bind a host to a client-certificate fingerprint (None or "" unbinds)."""
        host_id = canonical_host_id(raw_id)
        value = parse_fingerprint(fingerprint) if fingerprint else None
        await store.bind_cert(self.db, host_id, value)
        return value

    async def _drop(self, host_id: str, code: int, reason: str) -> None:
        await self.bus.publish(
            {
                "type": "agent_control",
                "host_id": host_id,
                "action": "drop",
                "code": code,
                "reason": reason,
            }
        )
