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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from nixfleet.agent import codec
from nixfleet.agent.ratelimit import parse_rate
from nixfleet.agent.transport import TransportOptions
from nixfleet.core.branch import check_branch
from nixfleet.core.commands import KIND_RULES, CommandKind, KindRules, parse_timeout
from nixfleet.core.errors import ConfigError, NixFleetError
from nixfleet.core.hostid import canonical_host_id
from nixfleet.core.labels import check_labels, parse_assignments
from nixfleet.core.wire import HostMeta
from nixfleet.security.tls import MIN_VERSIONS, parse_pin

T = TypeVar("T")
V = TypeVar("V")

ENV_PREFIX = "NIXFLEET_AGENT_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_TRUE = ("1", "true", "yes", "on", "t", "y")
_FALSE = ("0", "false", "no", "off", "f", "n")


@dataclass
class AgentOptions:
    """Everything `nixfleet agent` is told; read once at start-up by `load_options`.

    Built only by load_options, which checks every value with the parser of its key
    (`_PARSERS`): a field without a parser there is a bug the options test catches.
    """

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
    systemctl: str = "systemctl"
    allow_insecure: bool = False
    ca_file: Path | None = None
    pin: list[str] = field(default_factory=list)
    min_tls: str = "1.2"
    command_rate: tuple[int, float] = (6, 600.0)
    backoff_floor: float = 1.0
    backoff_cap: float = 300.0
    breaker_threshold: int = 5
    probe_interval: float = 60.0
    location: str = ""
    device_type: str = ""
    theme_color: str = ""
    # KEY=VALUE labels of this host (core.labels); they win over the operator's.
    label: dict[str, str] = field(default_factory=dict)
    timeout: dict[str, str] = field(default_factory=dict)
    enroll_code_file: Path | None = None
    # The code itself; after loading, the content of enroll_code_file when that is given.
    enroll_code: str = field(default="", repr=False)
    client_cert: Path | None = None
    client_key: Path | None = None
    log_level: str = "info"

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


# --- one parser per key: the value of any source (a flag's, a variable's text, TOML's) -------
# Each returns the value or raises ValueError with the reason: "must …", "is …" and
# "cannot …" read after the key ("--min-tls must be one of 1.2, 1.3"), anything else after
# a colon ("NIXFLEET_AGENT_BACKOFF_FLOOR: 'soon' is not a number").


def _words(value: str) -> list[str]:
    return [p for p in re.split(r"[\s,]+", value) if p]


def _project_error(parse: Callable[[V], T], value: V) -> T:
    """Return parse(value), turning the project's error into the ValueError reported."""
    try:
        return parse(value)
    except NixFleetError as exc:
        raise ValueError(str(exc).removeprefix("agent: ").removeprefix("labels: ")) from None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _path(value: Any) -> Path:
    return value if isinstance(value, Path) else Path(_text(value))


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {value!r}")


def _number(value: Any, kind: type[Any] = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = kind(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ValueError(f"{value!r} is not {'a whole' if kind is int else 'a'} number") from None
    if kind is int and isinstance(value, float) and number != value:
        raise ValueError(f"{value!r} is not a whole number")
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _at_least(bound: float, kind: type[Any] = float) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        number = _number(value, kind)
        if number < bound:
            raise ValueError(f"must be at least {bound:g}")
        return number

    return parse


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if _text(value) not in choices:
            raise ValueError(f"must be {', '.join(choices[:-1])} or {choices[-1]}")
        return str(value)

    return parse


def _min_tls(value: Any) -> str:
    if _text(value) not in MIN_VERSIONS:
        raise ValueError(f"must be one of {', '.join(MIN_VERSIONS)}")
    return str(value)


def _log_level(value: Any) -> str:
    if _text(value).lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return str(value).lower()


def _systemctl(value: Any) -> str:
    text = _text(value)
    if not 1 <= len(text) <= 1024 or "\x00" in text:
        raise ValueError("must be a program name or path of 1 to 1024 characters, no NUL")
    return text


def _list(value: Any, what: str) -> list[str]:
    items = _words(value) if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"expected a list of {what}, got {value!r}")
    return [str(v) for v in items]


def _pins(value: Any) -> list[str]:
    return [_project_error(parse_pin, p) for p in _list(value, "pins")]


def _rate(value: Any) -> tuple[int, float]:
    if isinstance(value, list | tuple) and len(value) == 2:  # the parsed form, as TOML may hold
        value = f"{_number(value[0], int)}/{_number(value[1])}"
    return _project_error(parse_rate, _text(value))


def _meta(name: str) -> Callable[[Any], str]:
    """Return the parser of one metadata field: the protocol's own bound (core.wire)."""

    def parse(value: Any) -> str:
        try:
            codec.convert(HostMeta, {name: _text(value)})
        except codec.Invalid as exc:
            reason = codec.where(exc)[1].replace("`", "")
            raise ValueError(reason[:1].lower() + reason[1:]) from None
        return str(value)

    return parse


def _labels(value: Any) -> dict[str, str]:
    """Return {key: value} from a table, a list of KEY=VALUE, or a string of them."""
    if isinstance(value, Mapping):
        return _project_error(check_labels, dict(value))
    pairs = _project_error(parse_assignments, _list(value, "KEY=VALUE labels"))
    if pairs[1]:
        raise ValueError("KEY- (remove) has no meaning here; write KEY=VALUE")
    return _project_error(check_labels, pairs[0])


def _timeouts(value: Any) -> dict[str, str]:
    """Return {kind: "WARN:KILL"} from a table, a list of KIND=WARN:KILL, or a string."""
    if isinstance(value, Mapping):
        value = [f"{k}={v}" for k, v in value.items()]
    table = {}
    for spec in _list(value, "KIND=WARN:KILL timeouts"):
        kind, rule = _project_error(parse_timeout, spec)
        table[kind.value] = f"{rule.warn_after_s:g}:{rule.kill_after_s:g}"
    return table


def _readable(value: Any) -> Path:
    """Return the path of a file that can be read now (its error names the source)."""
    path = _path(value)
    try:
        path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "url": _text,
    "host_id": lambda v: _project_error(canonical_host_id, _text(v)),
    "token_file": _path,
    "repo_dir": _path,
    "repo_url": _text,
    "branch": lambda v: _project_error(check_branch, _text(v)),
    "state_dir": _path,
    "system_dir": _path,
    "system_profile": _path,
    "macos_version_file": _path,
    "os": _one_of("nixos", "macos"),
    "macos_tool": _one_of("darwin-rebuild", "home-manager"),
    "systemd_run": _one_of("auto", "yes", "no"),
    "systemctl": _systemctl,
    "allow_insecure": _bool,
    "ca_file": _path,
    "pin": _pins,
    "min_tls": _min_tls,
    "command_rate": _rate,
    "backoff_floor": _at_least(0.01),
    "backoff_cap": _at_least(0.1),
    "breaker_threshold": _at_least(1, int),
    "probe_interval": _at_least(0.1),
    "location": _meta("location"),
    "device_type": _meta("device_type"),
    "theme_color": _meta("theme_color"),
    "label": _labels,
    "timeout": _timeouts,
    "enroll_code_file": _readable,
    "enroll_code": _text,
    "client_cert": _path,
    "client_key": _path,
    "log_level": _log_level,
}
_REQUIRED = ("url", "host_id", "token_file", "repo_dir")


class _Refused(Exception):
    """One key's value was refused: the key and the sentence after its name."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key, self.reason = key, reason


def load_options(flags: Mapping[str, Any], config: Path | None = None) -> AgentOptions:
    """Return the options from flags, the environment and the config file, or raise ConfigError.

    flags holds only the flags given on the command line (keys as in AgentOptions).
    1. Read the file; a key it has that is no option stops start-up.
    2. For each key in the table's order, take the highest source that gives it and parse
       that value; the first refusal stops start-up, naming the key as that source does.
    3. Check what spans keys (the backoff cap against its floor), read the enrollment code.
    """
    file_values = _read_config(config) if config is not None else {}
    env = {name.upper(): value for name, value in os.environ.items()}
    sources = (
        flags,
        {k: env[f"{ENV_PREFIX}{k.upper()}"] for k in _PARSERS if f"{ENV_PREFIX}{k.upper()}" in env},
        file_values,
    )
    try:
        for key in file_values:
            if key not in _PARSERS:
                raise _Refused(
                    key, " is not an agent setting (keys are the long flag names, with _ for -)"
                )
        values = _parse_all(sources)
    except _Refused as exc:
        name = _source_name(exc.key, flags, env, file_values, config)
        raise ConfigError(f"agent: {name}{exc.reason}") from None
    return _finish(AgentOptions(**values))


def _parse_all(sources: tuple[Mapping[str, Any], ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, parse in _PARSERS.items():
        given = next((s[key] for s in sources if key in s), _MISSING)
        if given is _MISSING:
            if key in _REQUIRED:
                where = f"a flag, {ENV_PREFIX}{key.upper()}, or {key} in --config"
                raise _Refused(key, f" is missing ({where})")
            continue
        try:
            values[key] = parse(given)
        except ValueError as exc:
            msg = str(exc)
            raise _Refused(
                key, f" {msg}" if msg.startswith(("must ", "is ", "cannot ")) else f": {msg}"
            ) from None
    floor, cap = values.get("backoff_floor", 1.0), values.get("backoff_cap", 300.0)
    if cap < floor:
        raise _Refused("backoff_cap", f" must not be below the backoff floor ({floor:g} s)")
    return values


_MISSING = object()


def _finish(opts: AgentOptions) -> AgentOptions:
    """Return opts with the enrollment code read from its file, when one is named."""
    if opts.enroll_code_file is not None:
        try:
            opts.enroll_code = opts.enroll_code_file.read_text()
        except OSError as exc:  # it vanished since it was checked
            raise ConfigError(
                f"agent: cannot read {opts.enroll_code_file}: {exc.strerror}"
            ) from None
    opts.enroll_code = opts.enroll_code.strip()
    return opts


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"agent: --config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent: --config: {path} is not TOML: {exc}") from None


def _source_name(
    key: str,
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    config: Path | None,
) -> str:
    """Return key as the source that gave it spells it (the flag when none did)."""
    if key in flags:
        return "--" + key.replace("_", "-")
    if f"{ENV_PREFIX}{key.upper()}" in env:
        return f"{ENV_PREFIX}{key.upper()}"
    if key in file_values:
        return f"{key} in {config}"
    return "--" + key.replace("_", "-")
