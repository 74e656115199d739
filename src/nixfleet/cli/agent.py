"""`nixfleet agent`: run the agent on this host."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nixfleet.cli.common import configure_logging, fail
from nixfleet.core.errors import NixFleetError

if TYPE_CHECKING:
    from nixfleet.agent.transport import TransportOptions
    from nixfleet.core.commands import CommandKind, KindRules
    from nixfleet.core.protocol import HostMeta


def agent(
    url: Annotated[str, typer.Option(help="Dashboard URL, e.g. https://fleet.example.org")],
    host_id: Annotated[str, typer.Option(help="This host's id in the fleet.")],
    token_file: Annotated[Path, typer.Option(help="File holding this host's agent token.")],
    repo_dir: Annotated[Path, typer.Option(help="The agent's own clone of the config repo.")],
    repo_url: Annotated[str, typer.Option(help="Clone from here if repo-dir is empty.")] = "",
    branch: str = "main",
    state_dir: Annotated[Path, typer.Option(help="Journal of commands in flight.")] = Path(
        "/var/lib/nixfleet-agent"
    ),
    system_dir: Annotated[
        Path, typer.Option(help="Where current-system and booted-system live.")
    ] = Path("/run"),
    system_profile: Annotated[
        Path | None,
        typer.Option(
            help="The profile whose generations are deployed (default "
            "/nix/var/nix/profiles/system; home-manager: ~/.local/state/nix/profiles/"
            "home-manager)."
        ),
    ] = None,
    macos_version_file: Annotated[
        Path, typer.Option(help="Where macOS says its version (ProductVersion).")
    ] = Path("/System/Library/CoreServices/SystemVersion.plist"),
    os_kind: Annotated[str, typer.Option("--os", help="nixos or macos.")] = "nixos",
    macos_tool: Annotated[str, typer.Option(help="darwin-rebuild or home-manager.")] = (
        "darwin-rebuild"
    ),
    systemd_run: Annotated[str, typer.Option(help="auto, yes or no.")] = "auto",
    allow_insecure: Annotated[
        bool,
        typer.Option(
            help="Allow http:// and ws:// URLs: the token and all commands travel in plain "
            "text. Only for loopback demos; logged as a warning at start."
        ),
    ] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            help="PEM bundle of the CA(s) that may sign the dashboard's certificate. "
            "When given, only these are trusted (the system roots are not used)."
        ),
    ] = None,
    pin: Annotated[
        list[str] | None,
        typer.Option(
            help="sha256/<base64> hash of the dashboard's public key (SubjectPublicKeyInfo); "
            "repeatable, so a backup key can be pinned before a rotation. A server matching "
            "no pin is refused before any byte (or the token) is sent. "
            "`nixfleet admin spki-pin` prints it."
        ),
    ] = None,
    min_tls: Annotated[str, typer.Option(help="Lowest TLS version accepted: 1.2 or 1.3.")] = "1.2",
    command_rate: Annotated[
        str,
        typer.Option(
            help="At most N commands started per SECONDS (token bucket, kept in "
            "--state-dir); an over-limit command is answered `rejected: rate limited`."
        ),
    ] = "6/600",
    backoff_floor: Annotated[
        float, typer.Option(min=0.01, help="Shortest wait (s) between connection attempts.")
    ] = 1.0,
    backoff_cap: Annotated[
        float, typer.Option(min=0.1, help="Longest wait (s) between connection attempts.")
    ] = 300.0,
    breaker_threshold: Annotated[
        int,
        typer.Option(
            min=1,
            help="Failed dials in a row that open the circuit breaker; while open, one "
            "probe per --probe-interval.",
        ),
    ] = 5,
    probe_interval: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds between probes while the breaker is open."),
    ] = 60.0,
    location: Annotated[str, typer.Option(help="Shown in the dashboard.")] = "",
    device_type: Annotated[str, typer.Option(help="e.g. server, laptop.")] = "",
    theme_color: Annotated[str, typer.Option(help="#rrggbb for the host's row.")] = "",
    timeout: Annotated[
        list[str] | None,
        typer.Option(help="KIND=WARN:KILL seconds, e.g. switch=900:3600 (repeatable)."),
    ] = None,
    enroll_code_file: Annotated[
        Path | None,
        typer.Option(help="One-time enrollment code; exchanged for the token on first start."),
    ] = None,
    enroll_code: Annotated[
        str,
        typer.Option(
            help="The enrollment code itself (visible in ps; prefer --enroll-code-file).",
        ),
    ] = "",
    client_cert: Annotated[
        Path | None, typer.Option(help="Client certificate (PEM) for dashboards with mTLS.")
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option(help="Its private key (default: in the certificate file).")
    ] = None,
    log_level: str = "info",
) -> None:
    """Run the agent on this host."""
    from nixfleet.agent.daemon import AgentOptions, run_agent

    configure_logging(log_level)
    transport = _agent_transport(
        ca_file, pin or [], min_tls, allow_insecure, backoff_floor, backoff_cap
    )
    transport = dataclasses.replace(
        transport,
        breaker_threshold=breaker_threshold,
        probe_interval_s=probe_interval,
        client_cert=client_cert,
        client_key=client_key,
    )
    if os_kind not in ("nixos", "macos"):
        fail("agent: --os must be nixos or macos")
    if macos_tool not in ("darwin-rebuild", "home-manager"):
        fail("agent: --macos-tool must be darwin-rebuild or home-manager")
    opts = AgentOptions(
        url=url,
        host_id=host_id,
        token_file=token_file,
        repo_dir=repo_dir,
        state_dir=state_dir,
        system_dir=system_dir,
        system_profile=system_profile,
        macos_version_file=macos_version_file,
        repo_url=repo_url,
        branch=branch,
        os_kind=os_kind,
        macos_tool=macos_tool,
        systemd_run=systemd_run,
        meta=_agent_meta(location, device_type, theme_color),
        rules=_agent_rules(timeout or []),
        transport=transport,
        command_rate=_agent_rate(command_rate),
        enroll_code=_enroll_code(enroll_code, enroll_code_file),
    )
    try:
        run_agent(opts)
    except NixFleetError as exc:
        fail(f"agent: {str(exc).removeprefix('agent: ')}")
    except OSError as exc:
        fail(f"agent: {exc}")


def _agent_transport(
    ca_file: Path | None,
    pins: list[str],
    min_tls: str,
    allow_insecure: bool,
    floor: float,
    cap: float,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> TransportOptions:
    from nixfleet.agent.transport import TransportOptions
    from nixfleet.security.tls import MIN_VERSIONS, parse_pin

    if min_tls not in MIN_VERSIONS:
        fail(f"agent: --min-tls must be one of {', '.join(MIN_VERSIONS)}")
    if cap < floor:
        fail("agent: --backoff-cap must not be below --backoff-floor")
    try:
        parsed = frozenset(parse_pin(p) for p in pins)
    except NixFleetError as exc:
        fail(str(exc))
    return TransportOptions(
        ca_file=ca_file,
        pins=parsed,
        min_tls=min_tls,
        allow_insecure=allow_insecure,
        backoff_floor_s=floor,
        backoff_cap_s=cap,
        client_cert=client_cert,
        client_key=client_key,
    )


def _agent_rate(text: str) -> tuple[int, float]:
    from nixfleet.agent.ratelimit import parse_rate

    try:
        return parse_rate(text)
    except NixFleetError as exc:
        fail(str(exc))


def _enroll_code(code: str, path: Path | None) -> str:
    if path is None:
        return code.strip()
    try:
        return path.read_text().strip()
    except OSError as exc:
        fail(f"agent: --enroll-code-file: {exc.strerror}")


def _agent_meta(location: str, device_type: str, theme_color: str) -> HostMeta | None:
    from pydantic import ValidationError

    from nixfleet.core.protocol import HostMeta

    if not (location or device_type or theme_color):
        return None
    try:
        return HostMeta(location=location, device_type=device_type, theme_color=theme_color)
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"agent: --{str(err['loc'][0]).replace('_', '-')}: {err['msg']}")


def _agent_rules(specs: list[str]) -> dict[CommandKind, KindRules]:
    from nixfleet.core.commands import KIND_RULES, parse_timeout

    rules = dict(KIND_RULES)
    for spec in specs:
        try:
            kind, rule = parse_timeout(spec)
        except NixFleetError as exc:
            fail(f"agent: --timeout: {exc}")
        rules[kind] = rule
    return rules
