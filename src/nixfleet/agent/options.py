"""The agent's one typed options table: flags, then NIXFLEET_AGENT_* variables, then a TOML file.

Precedence, highest first: a flag given on the command line, the environment, the TOML
file named by `--config`, the defaults below. A value from a higher source replaces the
whole value below it (a `--pin` flag replaces the pins of the file; lists are not merged).

Keys are the long flag names with `-` replaced by `_` (`--host-id` is `host_id`, `--os` is
`os`); the variable is `NIXFLEET_AGENT_` + the key upper-cased (`NIXFLEET_AGENT_HOST_ID`).
Secrets come from files, so the `_FILE` variants are keys of their own: `token_file`
(`NIXFLEET_AGENT_TOKEN_FILE`) holds the agent token, `enroll_code_file`
(`NIXFLEET_AGENT_ENROLL_CODE_FILE`) the one-time enrollment code, `client_key` the key of
the client certificate. Lists and tables:

    pin = ["sha256/…=", "sha256/…="]        NIXFLEET_AGENT_PIN="sha256/…= sha256/…="
    timeout = { switch = "900:3600" }       NIXFLEET_AGENT_TIMEOUT="switch=900:3600 test=60:120"

(`timeout` also accepts a list of "KIND=WARN:KILL" strings, the form of the repeatable
flag.) A bad value, an unknown key in the file or a missing required key stops start-up
with one ConfigError line naming the key as its source spells it: `--min-tls`,
`NIXFLEET_AGENT_MIN_TLS`, or `min_tls in /etc/nixfleet/agent.toml`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from nixfleet.agent.ratelimit import parse_rate
from nixfleet.agent.transport import TransportOptions
from nixfleet.core.branch import check_branch
from nixfleet.core.commands import KIND_RULES, CommandKind, KindRules, parse_timeout
from nixfleet.core.errors import ConfigError, NixFleetError
from nixfleet.core.hostid import canonical_host_id
from nixfleet.core.labels import check_labels, parse_assignments
from nixfleet.core.protocol import HostMeta
from nixfleet.security.tls import MIN_VERSIONS, parse_pin

T = TypeVar("T")
V = TypeVar("V")

ENV_PREFIX = "NIXFLEET_AGENT_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# The parsed TOML file of the load in progress: the lowest source, below the environment.
_file_values: ContextVar[Mapping[str, Any]] = ContextVar("agent_file_values")


def _words(value: str) -> list[str]:
    return [p for p in re.split(r"[\s,]+", value) if p]


def _project_error(parse: Callable[[V], T], value: V) -> T:
    """Return parse(value), turning the project's error into the ValueError pydantic reports."""
    try:
        return parse(value)
    except NixFleetError as exc:
        raise ValueError(str(exc).removeprefix("agent: ").removeprefix("labels: ")) from None


class _ConfigFile(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _file_values.get({}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get({}))


class AgentOptions(BaseSettings):
    """Everything `nixfleet agent` is told; read once at start-up by `load_options`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    url: str
    host_id: str
    token_file: Path
    repo_dir: Path
    repo_url: str = ""
    branch: str = "main"
    state_dir: Path = Path("/var/lib/nixfleet-agent")
    system_dir: Path = Path("/run")
    # The system profile; None: /nix/var/nix/profiles/system, or home-manager's own.
    system_profile: Path | None = None
    macos_version_file: Path = Path("/System/Library/CoreServices/SystemVersion.plist")
    os: str = "nixos"
    macos_tool: str = "darwin-rebuild"
    systemd_run: str = "auto"
    # The program a health gate's unit check asks (`PROGRAM is-active --quiet UNIT`).
    systemctl: str = Field("systemctl", min_length=1, max_length=1024, pattern=r"^[^\x00]*$")
    allow_insecure: bool = False
    ca_file: Path | None = None
    pin: Annotated[list[str], NoDecode] = Field(default_factory=list)
    min_tls: str = "1.2"
    command_rate: Annotated[tuple[int, float], NoDecode] = (6, 600.0)
    backoff_floor: float = Field(1.0, ge=0.01)
    backoff_cap: float = Field(300.0, ge=0.1)
    breaker_threshold: int = Field(5, ge=1)
    probe_interval: float = Field(60.0, ge=0.1)
    location: str = ""
    device_type: str = ""
    theme_color: str = ""
    # KEY=VALUE labels of this host (core.labels); they win over the operator's.
    label: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    timeout: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    enroll_code_file: Path | None = None
    # The code itself; after loading, the content of enroll_code_file when that is given.
    enroll_code: str = Field("", repr=False)
    client_cert: Path | None = None
    client_key: Path | None = None
    log_level: str = "info"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFile(settings_cls)

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        return _project_error(canonical_host_id, value)

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        return _project_error(check_branch, value)

    @field_validator("os")
    @classmethod
    def _os(cls, value: str) -> str:
        if value not in ("nixos", "macos"):
            raise ValueError("must be nixos or macos")
        return value

    @field_validator("macos_tool")
    @classmethod
    def _macos_tool(cls, value: str) -> str:
        if value not in ("darwin-rebuild", "home-manager"):
            raise ValueError("must be darwin-rebuild or home-manager")
        return value

    @field_validator("systemd_run")
    @classmethod
    def _systemd_run(cls, value: str) -> str:
        if value not in ("auto", "yes", "no"):
            raise ValueError("must be auto, yes or no")
        return value

    @field_validator("min_tls")
    @classmethod
    def _min_tls(cls, value: str) -> str:
        if value not in MIN_VERSIONS:
            raise ValueError(f"must be one of {', '.join(MIN_VERSIONS)}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.lower()

    @field_validator("pin", mode="before")
    @classmethod
    def _pins(cls, value: Any) -> Any:
        items = _words(value) if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return items
        return [_project_error(parse_pin, str(p)) for p in items]

    @field_validator("command_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        return _project_error(parse_rate, value) if isinstance(value, str) else value

    @field_validator("backoff_cap")
    @classmethod
    def _cap_above_floor(cls, value: float, info: ValidationInfo) -> float:
        floor = info.data.get("backoff_floor")
        if floor is not None and value < floor:
            raise ValueError(f"must not be below the backoff floor ({floor:g} s)")
        return value

    @field_validator("location", "device_type", "theme_color")
    @classmethod
    def _meta(cls, value: str, info: ValidationInfo) -> str:
        try:
            HostMeta.model_validate({str(info.field_name): value})
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"]) from None
        return value

    @field_validator("label", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        """Return {key: value} from a table, a list of KEY=VALUE, or a string of them."""
        if isinstance(value, str):
            value = _words(value)
        if isinstance(value, list | tuple):
            pairs = _project_error(parse_assignments, [str(v) for v in value])
            if pairs[1]:
                raise ValueError("KEY- (remove) has no meaning here; write KEY=VALUE")
            value = pairs[0]
        if isinstance(value, Mapping):
            value = _project_error(check_labels, dict(value))
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeouts(cls, value: Any) -> Any:
        """Return {kind: "WARN:KILL"} from a table, a list of KIND=WARN:KILL, or a string."""
        if isinstance(value, str):
            value = _words(value)
        if isinstance(value, Mapping):
            value = [f"{k}={v}" for k, v in value.items()]
        if not isinstance(value, list | tuple):
            return value
        table = {}
        for spec in value:
            kind, rule = _project_error(parse_timeout, str(spec))
            table[kind.value] = f"{rule.warn_after_s:g}:{rule.kill_after_s:g}"
        return table

    # The certificate files are loaded (and named if unreadable) when the TLS context is
    # built; the code file is read here, so its error can name the source that gave it.
    @field_validator("enroll_code_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                value.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read {value}: {exc.strerror}") from None
        return value

    @model_validator(mode="after")
    def _read_enroll_code(self) -> AgentOptions:
        if self.enroll_code_file is not None:
            try:
                self.enroll_code = self.enroll_code_file.read_text()
            except OSError as exc:
                raise ValueError(f"cannot read {self.enroll_code_file}: {exc.strerror}") from None
        self.enroll_code = self.enroll_code.strip()
        return self

    @property
    def rules(self) -> dict[CommandKind, KindRules]:
        """Return the timeout rules of every kind, with this host's overrides."""
        rules = dict(KIND_RULES)
        for kind, limits in self.timeout.items():
            rules[CommandKind(kind)] = parse_timeout(f"{kind}={limits}")[1]
        return rules

    @property
    def meta(self) -> HostMeta:
        """Return what the agent tells the dashboard about the host (an empty field or
        label set: the operator's values stay)."""
        return HostMeta(
            location=self.location,
            device_type=self.device_type,
            theme_color=self.theme_color,
            labels=self.label,
        )

    @property
    def transport(self) -> TransportOptions:
        return TransportOptions(
            ca_file=self.ca_file,
            pins=frozenset(self.pin),
            min_tls=self.min_tls,
            allow_insecure=self.allow_insecure,
            client_cert=self.client_cert,
            client_key=self.client_key,
            backoff_floor_s=self.backoff_floor,
            backoff_cap_s=self.backoff_cap,
            breaker_threshold=self.breaker_threshold,
            probe_interval_s=self.probe_interval,
        )


def load_options(flags: Mapping[str, Any], config: Path | None = None) -> AgentOptions:
    """Return the options from flags, the environment and the config file, or raise ConfigError.

    flags holds only the flags given on the command line (keys as in AgentOptions).
    """
    file_values = _read_config(config) if config is not None else {}
    token = _file_values.set(file_values)
    try:
        return AgentOptions(**flags)
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check across keys, or the code file vanished since
            raise ConfigError(f"agent:{_reason(first)}") from None
        name = _source_name(str(first["loc"][0]), flags, file_values, config)
        raise ConfigError(f"agent: {name}{_reason(first)}") from None
    finally:
        _file_values.reset(token)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"agent: --config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent: --config: {path} is not TOML: {exc}") from None


def _source_name(
    key: str, flags: Mapping[str, Any], file_values: Mapping[str, Any], config: Path | None
) -> str:
    """Return key as the source that gave it spells it (the flag when none did)."""
    env = f"{ENV_PREFIX}{key.upper()}"
    if key in flags:
        return "--" + key.replace("_", "-")
    if any(name.upper() == env for name in os.environ):
        return env
    if key in file_values:
        return f"{key} in {config}"
    return "--" + key.replace("_", "-")


def _reason(error: Any) -> str:
    if error["type"] == "missing":
        key = str(error["loc"][0])
        return f" is missing (a flag, {ENV_PREFIX}{key.upper()}, or {key} in --config)"
    if error["type"] == "extra_forbidden":
        return " is not an agent setting (keys are the long flag names, with _ for -)"
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f" {msg}" if msg.startswith(("must ", "is ", "cannot ")) else f": {msg}"
