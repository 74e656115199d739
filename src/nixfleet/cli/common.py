"""What every command group shares: the one-line failure and the dashboard's Settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

import typer

from nixfleet.core.errors import ConfigError

if TYPE_CHECKING:
    from nixfleet.config import Settings


def fail(message: str) -> NoReturn:
    """Print message on stderr and exit 2, the code for a bad invocation or configuration."""
    typer.echo(message, err=True)
    raise typer.Exit(2)


def dashboard_settings(**overrides: Any) -> Settings:
    """Return the dashboard's Settings, or fail with the one line naming the bad key."""
    from nixfleet.config import load_settings

    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        fail(str(exc))


def configure_logging(level: str) -> None:
    """Set up plain-text logging at level (imported late: `--help` stays fast)."""
    from nixfleet.cli.logs import configure

    configure(level)
