"""`nixfleet agent` (and the `nixfleet-agent` command): run the agent on this host.

Parsed with argparse, not typer: the agent runs on every host, many of them small, and
typer with click and rich costs about 15 MiB of its resident memory (docs/benchmarks.md).
`nixfleet agent …` reaches this parser without importing typer (cli/launch.py).

The flags only declare themselves: `agent.options.load_options` merges the given ones with
NIXFLEET_AGENT_* variables and the `--config` TOML file, applies the defaults and checks
every value, so a flag and its variable can never disagree on what is valid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

HELP = "Run the agent on this host."

# (flag, type, help, default shown): type is str, Path, float, int, bool or list (repeatable).
FLAGS: tuple[tuple[str, Any, str, str], ...] = (
    ("--config", Path, "TOML file of options (keys: the long flag names with _ for -); "
     "flags and NIXFLEET_AGENT_* variables override it.", ""),
    ("--url", str, "Dashboard URL, e.g. https://fleet.example.org", ""),
    ("--host-id", str, "This host's id in the fleet.", ""),
    ("--token-file", Path, "File holding this host's agent token.", ""),
    ("--repo-dir", Path, "The agent's own clone of the config repo.", ""),
    ("--repo-url", str, "Clone from here if repo-dir is empty.", ""),
    ("--branch", str, "Branch of the config repo.", "main"),
    ("--state-dir", Path, "Journal of commands in flight.", "/var/lib/nixfleet-agent"),
    ("--system-dir", Path, "Where current-system and booted-system live.", "/run"),
    ("--system-profile", Path, "The profile whose generations are deployed (default "
     "/nix/var/nix/profiles/system; with home-manager "
     "~/.local/state/nix/profiles/home-manager).", ""),
    ("--macos-version-file", Path, "Where macOS says its version.",
     "/System/Library/CoreServices/SystemVersion.plist"),
    ("--os", str, "nixos or macos.", "nixos"),
    ("--macos-tool", str, "darwin-rebuild or home-manager.", "darwin-rebuild"),
    ("--systemd-run", str, "auto, yes or no.", "auto"),
    ("--allow-insecure", bool, "Allow http:// and ws:// URLs: the token and all commands "
     "travel in plain text. Only for loopback demos; logged as a warning at start.", ""),
    ("--ca-file", Path, "PEM bundle of the CA(s) that may sign the dashboard's certificate. "
     "When given, only these are trusted (the system roots are not used).", ""),
    ("--pin", list, "sha256/<base64> hash of the dashboard's public key "
     "(SubjectPublicKeyInfo); repeatable, so a backup key can be pinned before a rotation. "
     "A server matching no pin is refused before any byte (or the token) is sent. "
     "`nixfleet admin spki-pin` prints it.", ""),
    ("--min-tls", str, "Lowest TLS version accepted: 1.2 or 1.3.", "1.2"),
    ("--command-rate", str, "At most N commands started per SECONDS (token bucket, kept in "
     "--state-dir); an over-limit command is answered `rejected: rate limited`.", "6/600"),
    ("--backoff-floor", float, "Shortest wait (s) between connection attempts.", "1"),
    ("--backoff-cap", float, "Longest wait (s) between connection attempts.", "300"),
    ("--breaker-threshold", int, "Failed dials in a row that open the circuit breaker; while "
     "open, one probe per --probe-interval.", "5"),
    ("--probe-interval", float, "Seconds between probes while the breaker is open.", "60"),
    ("--location", str, "Shown in the dashboard.", ""),
    ("--device-type", str, "e.g. server, laptop.", ""),
    ("--theme-color", str, "#rrggbb for the host's row.", ""),
    ("--label", list, "KEY=VALUE label of this host, e.g. role=web (repeatable).", ""),
    ("--timeout", list, "KIND=WARN:KILL seconds, e.g. switch=900:3600 (repeatable).", ""),
    ("--enroll-code-file", Path, "One-time enrollment code; exchanged for the token on first "
     "start.", ""),
    ("--enroll-code", str, "The enrollment code itself (visible in ps; prefer "
     "--enroll-code-file).", ""),
    ("--client-cert", Path, "Client certificate (PEM) for dashboards with mTLS.", ""),
    ("--client-key", Path, "Its private key (default: in the certificate file).", ""),
    ("--log-level", str, "debug, info, warning or error.", "info"),
)  # fmt: skip


METAVARS = {str: "TEXT", Path: "PATH", float: "FLOAT", int: "INTEGER"}


def parser(prog: str = "nixfleet agent") -> argparse.ArgumentParser:
    """Return the agent's argument parser; an absent flag is None (left to the other sources)."""
    ap = argparse.ArgumentParser(prog=prog, description=HELP)
    for flag, kind, text, shown in FLAGS:
        text = f"{text} (default: {shown})" if shown else text
        if kind is bool:
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        elif kind is list:
            ap.add_argument(flag, action="append", metavar="TEXT", help=text)
        else:
            ap.add_argument(flag, type=kind, metavar=METAVARS[kind], help=text)
    return ap


def _fail(message: str) -> NoReturn:
    """Print message on stderr and exit 2, the code for a bad invocation or configuration."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def run(argv: list[str], prog: str = "nixfleet agent") -> None:
    """Parse argv (the words after `agent`), then run the agent until it is stopped."""
    args = vars(parser(prog).parse_args(argv))
    config = args.pop("config")
    given = {k: v for k, v in args.items() if v is not None}
    from nixfleet.agent.daemon import run_agent
    from nixfleet.agent.options import load_options
    from nixfleet.cli.logs import configure
    from nixfleet.core.errors import NixFleetError

    try:
        opts = load_options(given, config)
    except NixFleetError as exc:
        _fail(str(exc))
    configure(opts.log_level)
    try:
        run_agent(opts)
    except NixFleetError as exc:
        _fail(f"agent: {str(exc).removeprefix('agent: ')}")
    except OSError as exc:
        _fail(f"agent: {exc}")


def main() -> None:
    """The `nixfleet-agent` command."""
    run(sys.argv[1:], prog="nixfleet-agent")
