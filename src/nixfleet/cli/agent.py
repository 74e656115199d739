"""`nixfleet agent`: run the agent on this host.

The flags only declare themselves: `agent.options.load_options` merges the given ones with
NIXFLEET_AGENT_* variables and the `--config` TOML file, applies the defaults and checks
every value, so a flag and its variable can never disagree on what is valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nixfleet.cli.common import configure_logging, fail
from nixfleet.core.errors import NixFleetError

Text = str | None
File = Path | None


def agent(
    config: Annotated[
        File,
        typer.Option(
            help="TOML file of options (keys: the long flag names with _ for -); "
            "flags and NIXFLEET_AGENT_* variables override it."
        ),
    ] = None,
    url: Annotated[Text, typer.Option(help="Dashboard URL, e.g. https://fleet.example.org")] = None,
    host_id: Annotated[Text, typer.Option(help="This host's id in the fleet.")] = None,
    token_file: Annotated[File, typer.Option(help="File holding this host's agent token.")] = None,
    repo_dir: Annotated[
        File, typer.Option(help="The agent's own clone of the config repo.")
    ] = None,
    repo_url: Annotated[Text, typer.Option(help="Clone from here if repo-dir is empty.")] = None,
    branch: Annotated[
        Text, typer.Option(help="Branch of the config repo.", show_default="main")
    ] = None,
    state_dir: Annotated[
        File,
        typer.Option(help="Journal of commands in flight.", show_default="/var/lib/nixfleet-agent"),
    ] = None,
    system_dir: Annotated[
        File,
        typer.Option(help="Where current-system and booted-system live.", show_default="/run"),
    ] = None,
    system_profile: Annotated[
        File,
        typer.Option(
            help="The profile whose generations are deployed (default "
            "/nix/var/nix/profiles/system; with home-manager "
            "~/.local/state/nix/profiles/home-manager)."
        ),
    ] = None,
    macos_version_file: Annotated[
        File,
        typer.Option(
            help="Where macOS says its version.",
            show_default="/System/Library/CoreServices/SystemVersion.plist",
        ),
    ] = None,
    os: Annotated[Text, typer.Option("--os", help="nixos or macos.", show_default="nixos")] = None,
    macos_tool: Annotated[
        Text, typer.Option(help="darwin-rebuild or home-manager.", show_default="darwin-rebuild")
    ] = None,
    systemd_run: Annotated[Text, typer.Option(help="auto, yes or no.", show_default="auto")] = None,
    systemctl: Annotated[
        Text,
        typer.Option(
            help="The program a health gate's unit check runs as `PROGRAM is-active --quiet "
            "UNIT` (a stand-in where there is no systemd).",
            show_default="systemctl",
        ),
    ] = None,
    allow_insecure: Annotated[
        bool | None,
        typer.Option(
            help="Allow http:// and ws:// URLs: the token and all commands travel in plain "
            "text. Only for loopback demos; logged as a warning at start."
        ),
    ] = None,
    ca_file: Annotated[
        File,
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
    min_tls: Annotated[
        Text, typer.Option(help="Lowest TLS version accepted: 1.2 or 1.3.", show_default="1.2")
    ] = None,
    command_rate: Annotated[
        Text,
        typer.Option(
            help="At most N commands started per SECONDS (token bucket, kept in "
            "--state-dir); an over-limit command is answered `rejected: rate limited`.",
            show_default="6/600",
        ),
    ] = None,
    backoff_floor: Annotated[
        float | None,
        typer.Option(help="Shortest wait (s) between connection attempts.", show_default="1"),
    ] = None,
    backoff_cap: Annotated[
        float | None,
        typer.Option(help="Longest wait (s) between connection attempts.", show_default="300"),
    ] = None,
    breaker_threshold: Annotated[
        int | None,
        typer.Option(
            help="Failed dials in a row that open the circuit breaker; while open, one "
            "probe per --probe-interval.",
            show_default="5",
        ),
    ] = None,
    probe_interval: Annotated[
        float | None,
        typer.Option(help="Seconds between probes while the breaker is open.", show_default="60"),
    ] = None,
    location: Annotated[Text, typer.Option(help="Shown in the dashboard.")] = None,
    device_type: Annotated[Text, typer.Option(help="e.g. server, laptop.")] = None,
    theme_color: Annotated[Text, typer.Option(help="#rrggbb for the host's row.")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE label of this host, e.g. role=web (repeatable)."),
    ] = None,
    timeout: Annotated[
        list[str] | None,
        typer.Option(help="KIND=WARN:KILL seconds, e.g. switch=900:3600 (repeatable)."),
    ] = None,
    enroll_code_file: Annotated[
        File,
        typer.Option(help="One-time enrollment code; exchanged for the token on first start."),
    ] = None,
    enroll_code: Annotated[
        Text,
        typer.Option(
            help="The enrollment code itself (visible in ps; prefer --enroll-code-file).",
        ),
    ] = None,
    client_cert: Annotated[
        File, typer.Option(help="Client certificate (PEM) for dashboards with mTLS.")
    ] = None,
    client_key: Annotated[
        File, typer.Option(help="Its private key (default: in the certificate file).")
    ] = None,
    log_level: Annotated[
        Text, typer.Option(help="debug, info, warning or error.", show_default="info")
    ] = None,
) -> None:
    """Run the agent on this host."""
    # Only the flags given (read before anything else is local): an absent one leaves its
    # key to the environment and the file.
    given = {k: v for k, v in locals().items() if v is not None and v != [] and k != "config"}
    from nixfleet.agent.daemon import run_agent
    from nixfleet.agent.options import load_options

    try:
        opts = load_options(given, config)
    except NixFleetError as exc:
        fail(str(exc))
    configure_logging(opts.log_level)
    try:
        run_agent(opts)
    except NixFleetError as exc:
        fail(f"agent: {str(exc).removeprefix('agent: ')}")
    except OSError as exc:
        fail(f"agent: {exc}")
