"""The dashboard as an OpenID Connect relying party: authorization code with PKCE (S256).

1. `start` makes a state, a nonce and a PKCE verifier, and the provider's authorization
   URL carrying the state, the nonce and the verifier's S256 challenge.
2. `finish` trades the code (with the verifier) at the provider's token endpoint and
   verifies the ID token: its signature against the provider's published keys (JWKS),
   its issuer, audience (and azp), expiry, nonce and at_hash (Authlib's CodeIDToken).
   The user's claims come from the ID token, and from the userinfo endpoint when the
   token lacks the groups claim (its `sub` must be the token's).

The provider's metadata and keys are fetched when first needed and cached; a key id the
cache does not know fetches the keys again (the provider rotated), at most once in a while.
Authlib, joserfc and httpx are imported here only, when single sign-on is first used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nixfleet.core.secevents import AuthFactor

if TYPE_CHECKING:
    from joserfc.jwk import KeySet

# Asymmetric only: never "none", never an HMAC keyed with the (shared) client secret.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
LEEWAY_S = 60  # clock skew between the provider and the dashboard
METADATA_TTL_S = 3600.0
KEYS_REFETCH_S = 30.0  # an unknown key id fetches the keys again at most this often
MAX_RESPONSE_BYTES = 512 * 1024


class SignOnError(Exception):
    """A sign-in is refused: `fault` is for the security log, the message for people."""

    def __init__(self, fault: AuthFactor, message: str, user: str = "") -> None:
        super().__init__(message)
        self.fault = fault
        self.user = user  # the verified user name, when the refusal comes after the token


@dataclass(frozen=True)
class Start:
    url: str
    state: str
    nonce: str
    verifier: str


@dataclass
class RelyingParty:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str
    timeout_s: float = 10.0
    _metadata: dict[str, Any] = field(default_factory=dict)
    _metadata_at: float = 0.0
    _keys: KeySet | None = None
    _keys_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self, redirect_uri: str) -> Start:
        """Return a new sign-in: where to send the browser, and what to keep for `finish`."""
        from authlib.common.security import generate_token
        from authlib.common.urls import add_params_to_uri
        from authlib.oauth2.rfc7636 import create_s256_code_challenge

        meta = await self.metadata()
        state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
        params = [
            ("response_type", "code"),
            ("client_id", self.client_id),
            ("redirect_uri", redirect_uri),
            ("scope", self.scopes),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", create_s256_code_challenge(verifier)),
            ("code_challenge_method", "S256"),
        ]
        return Start(
            add_params_to_uri(meta["authorization_endpoint"], params), state, nonce, verifier
        )

    async def finish(
        self, code: str, redirect_uri: str, verifier: str, nonce: str, wanted: str
    ) -> dict[str, Any]:
        """Return the verified claims of the user who signed in; raise SignOnError.

        `wanted` is the claim the caller needs (the groups): missing from the ID token,
        it is looked for at the userinfo endpoint.
        """
        meta = await self.metadata()
        tokens = await self._post_token(meta, code, redirect_uri, verifier)
        raw, access = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(raw, str) or not raw:
            raise SignOnError(AuthFactor.OIDC_TOKEN, "signon: the provider sent no ID token")
        access = access if isinstance(access, str) else None
        claims = await self.verify(raw, nonce, access)
        endpoint = meta.get("userinfo_endpoint")
        if wanted in claims or access is None or not isinstance(endpoint, str):
            return claims
        info = await self._get_json(endpoint, {"Authorization": f"Bearer {access}"})
        if info.get("sub") != claims["sub"]:
            raise SignOnError(
                AuthFactor.OIDC_TOKEN, "signon: the provider's userinfo names another user"
            )
        return {**info, **claims}

    async def verify(self, raw: str, nonce: str, access_token: str | None) -> dict[str, Any]:
        """Return the ID token's claims if it is the provider's, for us, fresh, ours."""
        from authlib.oidc.core import CodeIDToken
        from joserfc import jwt
        from joserfc.errors import (
            BadSignatureError,
            ExpiredTokenError,
            InvalidClaimError,
            JoseError,
            MissingClaimError,
        )

        keys = await self._keys_for(raw)
        try:
            token = jwt.decode(raw, keys, algorithms=list(ALGORITHMS))
        except BadSignatureError:
            raise SignOnError(AuthFactor.OIDC_SIGNATURE, _REFUSED["signature"]) from None
        except (JoseError, ValueError):
            raise SignOnError(AuthFactor.OIDC_SIGNATURE, _REFUSED["unverifiable"]) from None
        checked = CodeIDToken(
            token.claims,
            token.header,
            options={
                "iss": {"essential": True, "value": self.issuer},
                "aud": {"essential": True, "value": self.client_id},
                "exp": {"essential": True},
                "sub": {"essential": True},
            },
            params={"nonce": nonce, "client_id": self.client_id, "access_token": access_token},
        )
        try:
            checked.validate(now=int(time.time()), leeway=LEEWAY_S)
        except ExpiredTokenError:
            raise SignOnError(AuthFactor.OIDC_EXPIRED, _REFUSED["expired"]) from None
        except (InvalidClaimError, MissingClaimError) as exc:
            claim = getattr(exc, "claim", "")
            fault, text = _CLAIM_FAULTS.get(claim, (AuthFactor.OIDC_TOKEN, _REFUSED["claims"]))
            raise SignOnError(fault, text) from None
        except JoseError:
            raise SignOnError(AuthFactor.OIDC_TOKEN, _REFUSED["claims"]) from None
        if not isinstance(token.claims.get("sub"), str) or not token.claims["sub"]:
            raise SignOnError(AuthFactor.OIDC_TOKEN, _REFUSED["claims"])
        return dict(token.claims)

    async def metadata(self) -> dict[str, Any]:
        """Return the provider's discovery document (cached), checked to be the issuer's."""
        if self._metadata and time.monotonic() - self._metadata_at < METADATA_TTL_S:
            return self._metadata
        async with self._lock:
            if self._metadata and time.monotonic() - self._metadata_at < METADATA_TTL_S:
                return self._metadata
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            meta = await self._get_json(url)
            if meta.get("issuer") != self.issuer:
                raise SignOnError(
                    AuthFactor.OIDC_PROVIDER,
                    "signon: the provider's metadata names another issuer",
                )
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(meta.get(key), str):
                    raise SignOnError(
                        AuthFactor.OIDC_PROVIDER, f"signon: the provider's metadata lacks {key}"
                    )
            self._metadata, self._metadata_at = meta, time.monotonic()
            return meta

    async def _keys_for(self, raw: str) -> KeySet:
        """Return the provider's keys, fetched again if they lack the token's key id."""
        from joserfc.jwk import KeySet
        from joserfc.jws import extract_compact

        try:
            kid = extract_compact(raw.encode()).protected.get("kid")
        except (ValueError, TypeError, KeyError):
            raise SignOnError(AuthFactor.OIDC_SIGNATURE, _REFUSED["unverifiable"]) from None
        keys = self._keys
        if keys is not None and (kid is None or any(k.kid == kid for k in keys.keys)):
            return keys
        if keys is not None and time.monotonic() - self._keys_at < KEYS_REFETCH_S:
            return keys  # just fetched: an unknown key id will not verify
        meta = await self.metadata()
        document = await self._get_json(meta["jwks_uri"])
        try:
            keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError):
            raise SignOnError(
                AuthFactor.OIDC_PROVIDER, "signon: the provider's keys cannot be read"
            ) from None
        self._keys, self._keys_at = keys, time.monotonic()
        return keys

    async def _post_token(
        self, meta: Mapping[str, Any], code: str, redirect_uri: str, verifier: str
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        auth: tuple[str, str] | None = None
        if "client_secret_basic" in methods:
            auth = (self.client_id, self.client_secret)
        else:
            form |= {"client_id": self.client_id, "client_secret": self.client_secret}
        return await self._request_json("POST", meta["token_endpoint"], data=form, auth=auth)

    async def _get_json(self, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return await self._request_json("GET", url, headers=headers)

    async def _request_json(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        """Return the provider's JSON object answer; SignOnError for anything else."""
        import httpx

        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client,
                client.stream(method, url, **kw) as res,
            ):
                body = b""
                async for chunk in res.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise SignOnError(
                            AuthFactor.OIDC_PROVIDER, "signon: the provider's answer is too long"
                        )
                status = res.status_code
        except httpx.HTTPError:
            raise SignOnError(
                AuthFactor.OIDC_PROVIDER, "signon: the provider cannot be reached"
            ) from None
        import json

        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if status != 200 or not isinstance(value, dict):
            error = value.get("error") if isinstance(value, dict) else None
            said = f" ({str(error)[:60]})" if isinstance(error, str) else ""
            raise SignOnError(
                AuthFactor.OIDC_PROVIDER, f"signon: the provider refused the sign-in{said}"
            )
        return value


_REFUSED = {
    "signature": "signon: the ID token's signature does not verify with the provider's keys",
    "unverifiable": "signon: the ID token cannot be verified with the provider's keys",
    "expired": "signon: the ID token has expired",
    "claims": "signon: the ID token is not valid for this sign-in",
}
_CLAIM_FAULTS = {
    "aud": (AuthFactor.OIDC_AUDIENCE, "signon: the ID token was issued to another client"),
    "azp": (AuthFactor.OIDC_AUDIENCE, "signon: the ID token was issued to another client"),
    "iss": (AuthFactor.OIDC_ISSUER, "signon: the ID token was issued by another provider"),
    "nonce": (AuthFactor.OIDC_NONCE, "signon: the ID token belongs to another sign-in"),
    "exp": (AuthFactor.OIDC_EXPIRED, "signon: the ID token has expired"),
}
