"""Settings from NIXFLEET_* variables, NIXFLEET_*_FILE secret files and an optional TOML file.

Precedence, highest first: keyword arguments (the CLI), environment, `*_FILE` files,
the TOML file named by NIXFLEET_CONFIG_FILE, defaults.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import limits
import limits.storage
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from nixfleet.core.branch import check_branch
from nixfleet.core.errors import ConfigError, for_people
from nixfleet.core.errors import ValidationError as NixFleetValidationError
from nixfleet.core.gates import HealthGate
from nixfleet.core.rollouts import parse_policy, rollout_kind
from nixfleet.core.signon import RoleRule, parse_role_map

ENV_PREFIX = "NIXFLEET_"
MIN_SECRET_LEN = 32
# Values that appear in docs and examples: a secret equal to one of these is no secret.
KNOWN_DEFAULTS = frozenset({"changeme", "change-me", "secret", "nixfleet", "please-change-me"})


def _split(value: str) -> list[str]:
    return [p for p in re.split(r"[\s,]+", value) if p]


class _SecretFiles(PydanticBaseSettingsSource):
    """Read `NIXFLEET_<NAME>_FILE` for every field, so systemd credentials and agenix work."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        var = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(var)
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text().strip(), field_name, False
        except OSError as exc:
            raise ConfigError(f"config: {var}: cannot read {path}: {exc.strerror}") from None

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Return the networks in a comma- or space-separated list of addresses and CIDRs."""
    networks = []
    for item in value.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Path("nixfleet-data")
    database_url: str = ""
    # Replicas on one PostgreSQL: this process's name among them (default: the machine's
    # name and a random suffix, new at every start) and how long its lease lasts unrenewed.
    replica_id: str = Field("", pattern=r"^[A-Za-z0-9._-]{0,48}$")
    replica_lease_s: float = Field(15, ge=2, le=600)
    # SQLite: how long a write waits for another writer's lock before the answer is 503.
    db_busy_timeout_s: float = Field(10, gt=0, le=300)
    # PostgreSQL: connections this process may hold (pool + overflow), and how long a request
    # waits for one before the answer is 503. Replicas x (size + overflow + 1, the event
    # listener's own connection) must fit the server's max_connections (default 100).
    db_pool_size: int = Field(10, ge=1, le=200)
    db_pool_overflow: int = Field(20, ge=0, le=500)
    db_pool_timeout_s: float = Field(30, gt=0, le=300)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    demo: bool = False

    admin_user: str = "admin"
    admin_password_hash: SecretStr = SecretStr("")
    agent_token_hash_secret: SecretStr = SecretStr("")
    secure_cookies: bool = True
    # The first secret signs session cookies; all of them verify (rotation without logout).
    session_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    session_idle_s: int = Field(8 * 3600, ge=60)
    session_absolute_s: int = Field(7 * 86400, ge=60)
    require_totp: bool = False
    totp_secret: SecretStr = SecretStr("")
    # Single sign-on with OpenID Connect (docs/sso.md): on when an issuer is set. The
    # roles map names groups (or CLAIM:VALUE) and the role they give; a user matching none
    # is refused unless a default role is set. PASSWORD_LOGIN=false leaves SSO the only way.
    oidc_issuer: str = Field("", max_length=500)
    oidc_client_id: str = Field("", max_length=200)
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_scopes: str = Field("openid profile email", max_length=500)
    oidc_groups_claim: str = Field("groups", pattern=r"^[A-Za-z0-9_.:/-]{1,100}$")
    oidc_username_claim: str = Field("preferred_username", pattern=r"^[A-Za-z0-9_.:/-]{1,100}$")
    oidc_roles: str = Field("", max_length=4000)
    oidc_default_role: Literal["", "viewer", "operator", "admin"] = ""
    oidc_provider_name: str = Field("SSO", min_length=1, max_length=40)
    # The callback URL registered at the provider (default: this dashboard's own address).
    oidc_redirect_uri: str = Field("", max_length=500)
    oidc_timeout_s: float = Field(10, gt=0, le=120)
    password_login: bool = True
    # Login throttling: this many failures are free, then each one doubles the wait.
    login_free_failures: int = Field(5, ge=1)
    login_base_delay_s: float = Field(1.0, gt=0)
    login_max_delay_s: float = Field(900.0, gt=0)

    config_repo: str = ""
    config_branch: str = "main"
    target_cache_s: float = Field(10, ge=0)
    # Deploy on push (docs/deploying.md): one secret per forge (empty: that forge's hook
    # is off); a push to config_branch moves the target, and with hook_action=rollout also
    # starts a rollout of hook_rollout_command to every host with hook_rollout_policy.
    hook_github_secret: SecretStr = SecretStr("")
    hook_gitlab_token: SecretStr = SecretStr("")
    hook_forgejo_secret: SecretStr = SecretStr("")
    hook_action: Literal["target", "rollout"] = "target"
    hook_rollout_policy: str = "canary=1 waves=25% budget=0"
    hook_rollout_command: str = "pull-switch"

    heartbeat_s: float = Field(15, gt=0)
    command_expiry_s: int = Field(3600, ge=1)
    # The fleet's default health gate for switches (JSON, core.gates); a host's own default
    # and a command's own gate come first (docs/deploying.md#health-gates).
    health_gate: HealthGate | None = None
    reconnect_window_s: float = Field(90, gt=0)
    # Agent identity (docs/security.md "Agent identity").
    enroll_code_ttl_s: int = Field(3600, ge=1, le=7 * 86400)
    token_overlap_s: int = Field(0, ge=0, le=7 * 86400)
    shared_agent_token_hash: SecretStr = SecretStr("")
    allow_shared_token: bool = False
    auto_provision: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    # Behind a TLS-terminating proxy that verified the agent's client certificate: the
    # header it forwards it in (e.g. X-SSL-Client-Cert); believed from trusted proxies only.
    client_cert_header: str = Field("", pattern=r"^[A-Za-z0-9-]*$", max_length=64)

    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # What one host's commands may store (issue 13): output bytes per command, and for how
    # long the output of finished commands is kept.
    output_max_bytes: int = Field(64 * 2**20, ge=4096, le=2**40)
    output_retention_days: float = Field(30, gt=0)
    # Each host's state history (online, deploy state, reboot) is kept this long.
    state_history_days: float = Field(30, gt=0)
    sse_queue_size: int = Field(1000, ge=10)
    sse_replay_size: int = Field(1000, ge=0)
    sse_queue_bytes: int = Field(8 << 20, ge=64 * 1024)
    sse_replay_bytes: int = Field(16 << 20, ge=0)
    sse_keepalive_s: float = Field(15, gt=0)
    sse_max_per_session: int = Field(8, ge=1)
    sse_max_per_address: int = Field(32, ge=1)
    sse_max_total: int = Field(2000, ge=1)

    # Behind a reverse proxy: addresses and CIDRs whose forwarded headers are believed.
    trusted_proxies: str = ""
    # Where request-rate counts live: "" = the database on PostgreSQL (shared by every
    # replica), memory:// on SQLite; or any `limits` storage URI (memory://, redis://…).
    rate_limit_storage: str = ""
    rate_limit_login: str = "30/minute"
    # Many hosts can share one NAT address and all reconnect after a dashboard restart.
    rate_limit_agent_ws: str = "600/minute"
    rate_limit_api: str = "50/second"
    rate_limit_events: str = "60/minute"
    # Per API token, on top of the address's limit: a CI job's token shared by many runners.
    rate_limit_token: str = "20/second;3000/hour"  # noqa: S105 - a rate
    access_log: bool = True
    log_format: Literal["text", "json"] = "text"

    # Monitoring (issue 7): /metrics access, stored security events, alerts.
    metrics_token: SecretStr = SecretStr("")
    metrics_allow: str = ""  # comma-separated addresses or CIDRs allowed to scrape
    security_event_retention_days: float = Field(90, gt=0)
    alert_rules_file: Path | None = None
    alert_urls: SecretStr = SecretStr("")  # Apprise URLs, comma- or space-separated
    alert_allow_private: bool = False
    alert_retries: int = Field(3, ge=0, le=10)

    # Audit log (docs/monitoring.md "What the audit log proves"): the key its entries
    # and anchor are signed with (default: derived from AGENT_TOKEN_HASH_SECRET), where
    # the anchor is kept, and how long an action waits for its entry to be stored.
    audit_secret: SecretStr = SecretStr("")
    audit_anchor_file: Path | None = None
    audit_write_timeout_s: float = Field(30, gt=0, le=600)

    # Host names browsers may use (DNS rebinding); IP literals and localhost always pass.
    allowed_hosts: str = ""
    # The HTTP server (docs/reliability.md): a client must finish its request headers
    # within this; connections per address and in all before the oldest unfinished go.
    header_timeout_s: float = Field(10, gt=0, le=300)
    keep_alive_s: int = Field(5, ge=1, le=300)
    # How often each agent's WebSocket is pinged, and how long its pong may take: a host
    # whose machine vanished without closing (power, network) shows offline after both.
    agent_ping_s: float = Field(20, ge=1, le=300)
    max_connections: int = Field(0, ge=0)  # 0: from the open-file limit
    max_connections_per_address: int = Field(256, ge=1)

    @field_validator("metrics_allow")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        for part in _split(value):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not an address or CIDR") from None
        return value

    @property
    def audit_key(self) -> bytes | None:
        """Return the audit signing key (never stored in the database), or None."""
        own = self.audit_secret.get_secret_value()
        if own:
            return own.encode()
        base = self.agent_token_hash_secret.get_secret_value()
        if not base:
            return None
        return hmac.new(base.encode(), b"nixfleet audit log key", hashlib.sha256).digest()

    @property
    def audit_anchor_path(self) -> Path:
        return self.audit_anchor_file or self.data_dir.resolve() / "audit-anchor.json"

    @property
    def allowed_host_names(self) -> frozenset[str]:
        return frozenset(h.lower() for h in _split(self.allowed_hosts))

    @property
    def metrics_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(p, strict=False) for p in _split(self.metrics_allow)]

    @property
    def metrics_enabled(self) -> bool:
        """Whether anyone may scrape /metrics (security/scrape.py: a token or an address)."""
        return bool(self.metrics_token.get_secret_value() or self.metrics_networks)

    @property
    def alert_url_list(self) -> list[str]:
        return _split(self.alert_urls.get_secret_value())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _SecretFiles(settings_cls),
        ]
        toml = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @field_validator("config_branch")
    @classmethod
    def _safe_branch(cls, value: str) -> str:
        try:
            return check_branch(value)
        except NixFleetValidationError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("health_gate", mode="before")
    @classmethod
    def _gate_json(cls, value: Any) -> Any:
        # From the environment it arrives decoded; as a keyword (the CLI, the demo) as text.
        if isinstance(value, str):
            return json.loads(value) if value.strip() else None
        return value

    @field_validator("hook_rollout_policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        try:
            parse_policy(value)
        except NixFleetValidationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("hook_rollout_command")
    @classmethod
    def _rollout_kind(cls, value: str) -> str:
        try:
            return rollout_kind(value).value
        except NixFleetValidationError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("hook_github_secret", "hook_gitlab_token", "hook_forgejo_secret")
    @classmethod
    def _hook_secret(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 20:
            raise ValueError("a webhook secret needs at least 20 characters (gen-secret)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_list(cls, value: str) -> str:
        _networks(value)
        return value

    @field_validator(
        "rate_limit_login",
        "rate_limit_agent_ws",
        "rate_limit_api",
        "rate_limit_events",
        "rate_limit_token",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        if value == "off":
            return value
        try:
            limits.parse_many(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate such as '30/minute' or '5/second;100/hour' (or 'off')"
            ) from None
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        if value == "":
            return value
        scheme = value.partition("://")[0]
        # limits keeps its registry of schemes in storage.SCHEMES (not in its typed exports).
        known: dict[str, Any] = getattr(limits.storage, "SCHEMES", {})
        if not scheme or f"async+{scheme.removeprefix('async+')}" not in known:
            raise ValueError(f"{value!r} is not a storage URI of the limits library")
        return value

    @field_validator("oidc_roles")
    @classmethod
    def _role_map(cls, value: str) -> str:
        try:
            parse_role_map(value)
        except NixFleetValidationError as exc:
            raise ValueError(for_people(str(exc))) from None
        return value

    @property
    def oidc_role_map(self) -> tuple[RoleRule, ...]:
        """Return NIXFLEET_OIDC_ROLES parsed (validated at start-up)."""
        return parse_role_map(self.oidc_roles)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)

    @model_validator(mode="after")
    def _coherent_sso(self) -> Settings:
        if not self.oidc_issuer:
            if not self.password_login:
                raise ValueError(
                    "NIXFLEET_PASSWORD_LOGIN=false needs single sign-on (NIXFLEET_OIDC_ISSUER)"
                )
            return self
        url = urlsplit(self.oidc_issuer)
        if url.scheme != "https" and not (
            url.scheme == "http" and _is_loopback(url.hostname or "")
        ):
            raise ValueError("NIXFLEET_OIDC_ISSUER must be an https:// URL")
        if not self.oidc_client_id:
            raise ValueError("NIXFLEET_OIDC_ISSUER needs NIXFLEET_OIDC_CLIENT_ID")
        if "openid" not in self.oidc_scopes.split():
            raise ValueError("NIXFLEET_OIDC_SCOPES must include openid")
        if not self.oidc_role_map and not self.oidc_default_role:
            raise ValueError(
                "NIXFLEET_OIDC_ISSUER needs NIXFLEET_OIDC_ROLES (or NIXFLEET_OIDC_DEFAULT_ROLE):"
                " without them nobody could sign in"
            )
        return self

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """Return NIXFLEET_TRUSTED_PROXIES parsed (validated at start-up)."""
        return _networks(self.trusted_proxies)

    @model_validator(mode="after")
    def _coherent_identity(self) -> Settings:
        shared = self.shared_agent_token_hash.get_secret_value()
        if shared and not re.fullmatch(r"[0-9a-f]{64}", shared):
            raise ValueError(
                "NIXFLEET_SHARED_AGENT_TOKEN_HASH must be the 64-hex-digit output of "
                "`nixfleet admin hash-agent-token`, never the token itself"
            )
        if self.allow_shared_token and not shared:
            raise ValueError("NIXFLEET_ALLOW_SHARED_TOKEN needs NIXFLEET_SHARED_AGENT_TOKEN_HASH")
        if self.auto_provision and not self.allow_shared_token:
            raise ValueError("NIXFLEET_AUTO_PROVISION works only with NIXFLEET_ALLOW_SHARED_TOKEN")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("NIXFLEET_TLS_CERT and NIXFLEET_TLS_KEY go together")
        if self.client_ca is not None and self.tls_cert is None:
            raise ValueError("NIXFLEET_CLIENT_CA needs the dashboard to serve TLS (TLS_CERT)")
        if self.demo and not _is_loopback(self.host):
            raise ValueError(
                f"NIXFLEET_DEMO relaxes the required secrets: it listens on loopback only, "
                f"not on {self.host!r}"
            )
        return self

    @field_validator("session_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        """Accept a JSON list, or one string of secrets separated by commas or whitespace."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in re.split(r"[\s,]+", text) if part]
        return value

    @field_validator("totp_secret")
    @classmethod
    def _base32_totp(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value().replace(" ", "").upper()
        if raw and not re.fullmatch(r"[A-Z2-7]{16,}=*", raw):
            raise ValueError(
                "must be base32 of at least 16 characters (`nixfleet admin totp-setup`)"
            )
        return SecretStr(raw)

    @model_validator(mode="after")
    def _require_secrets(self) -> Settings:
        if self.require_totp and not self.totp_secret.get_secret_value():
            raise ValueError(
                "NIXFLEET_TOTP_SECRET is missing but NIXFLEET_REQUIRE_TOTP is on "
                "(make one with `nixfleet admin totp-setup`)"
            )
        if self.demo:
            return self
        for problem in self.weak_secrets():
            raise ValueError(problem)
        return self

    def weak_secrets(self) -> list[str]:
        """Return one line per missing, short or default secret (empty when all are fine)."""
        problems = []
        if not self.admin_password_hash.get_secret_value().startswith("$argon2"):
            problems.append(
                "NIXFLEET_ADMIN_PASSWORD_HASH is missing or not an argon2 hash "
                "(make one with `nixfleet admin hash-password`)"
            )
        named = [("NIXFLEET_AGENT_TOKEN_HASH_SECRET", self.agent_token_hash_secret)]
        named += [("NIXFLEET_SESSION_SECRETS", s) for s in self.session_secrets] or [
            ("NIXFLEET_SESSION_SECRETS", SecretStr(""))
        ]
        for key, secret in named:
            value = secret.get_secret_value()
            if value.lower() in KNOWN_DEFAULTS:
                problems.append(f"{key} is a default value; generate a random one")
            elif not value:
                problems.append(f"{key} is missing (make one with `nixfleet admin gen-secret`)")
            elif len(value) < MIN_SECRET_LEN:
                problems.append(
                    f"{key} must be at least {MIN_SECRET_LEN} characters "
                    "(make one with `nixfleet admin gen-secret`)"
                )
            elif len(set(value)) < 8:  # "aaaa…" or "0123…0123": a placeholder, not a secret
                problems.append(f"{key} looks like a placeholder; generate a random one")
        return problems

    @property
    def db_url(self) -> str:
        """Return the database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'nixfleet.db'}"


def load_settings(**overrides: Any) -> Settings:
    """Return validated Settings or raise ConfigError with one line naming the bad key."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        key = f"{ENV_PREFIX}{loc.upper()}: " if loc else ""
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"config: {key}{msg}") from None
