"""Settings from NIXFLEET_* variables, NIXFLEET_*_FILE secret files and an optional TOML file.

Precedence, highest first: keyword arguments (the CLI), environment, `*_FILE` files,
the TOML file named by NIXFLEET_CONFIG_FILE, defaults.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from nixfleet.core.branch import check_branch
from nixfleet.core.errors import ConfigError
from nixfleet.core.errors import ValidationError as NixFleetValidationError

ENV_PREFIX = "NIXFLEET_"
MIN_SECRET_LEN = 32


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Path("nixfleet-data")
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    demo: bool = False

    admin_user: str = "admin"
    admin_password_hash: SecretStr = SecretStr("")
    agent_token_hash_secret: SecretStr = SecretStr("")
    secure_cookies: bool = True
    session_idle_s: int = Field(8 * 3600, ge=60)
    session_absolute_s: int = Field(7 * 86400, ge=60)

    config_repo: str = ""
    config_branch: str = "main"
    target_cache_s: float = Field(10, ge=0)

    heartbeat_s: float = Field(15, gt=0)
    command_expiry_s: int = Field(3600, ge=1)
    reconnect_window_s: float = Field(90, gt=0)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    sse_queue_size: int = Field(1000, ge=10)

    # Monitoring (issue 7): /metrics access, stored security events, alerts.
    metrics_token: SecretStr = SecretStr("")
    metrics_allow: str = ""  # comma-separated addresses or CIDRs allowed to scrape
    security_event_retention_days: float = Field(90, gt=0)
    alert_rules_file: Path | None = None
    alert_urls: SecretStr = SecretStr("")  # Apprise URLs, comma- or space-separated
    alert_allow_private: bool = False
    alert_retries: int = Field(3, ge=0, le=10)

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
    def metrics_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(p, strict=False) for p in _split(self.metrics_allow)]

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

    @model_validator(mode="after")
    def _require_secrets(self) -> Settings:
        if self.demo:
            return self
        if not self.admin_password_hash.get_secret_value().startswith("$argon2"):
            raise ValueError(
                "NIXFLEET_ADMIN_PASSWORD_HASH is missing or not an argon2 hash "
                "(make one with `nixfleet admin hash-password`)"
            )
        if len(self.agent_token_hash_secret.get_secret_value()) < MIN_SECRET_LEN:
            raise ValueError(
                f"NIXFLEET_AGENT_TOKEN_HASH_SECRET must be at least {MIN_SECRET_LEN} characters "
                "(make one with `nixfleet admin gen-secret`)"
            )
        return self

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
