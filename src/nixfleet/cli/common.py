"""What every command group shares: the one-line failure and the dashboard's Settings."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from nixfleet.core.errors import ConfigError, NixFleetError

if TYPE_CHECKING:
    from nixfleet.config import Settings
    from nixfleet.storage.db import Database

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """Print message on stderr and exit 2, the code for a bad invocation or configuration."""
    # Without typer: `nixfleet serve` runs without loading it (cli/serve.py).
    print(message, file=sys.stderr)
    raise SystemExit(2)


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


def with_database(
    action: Callable[[Settings, Database], Awaitable[T]],
    audit: tuple[str, dict[str, Any]] | None = None,
) -> T:
    """Return action's result on the migrated dashboard database, audited as `cli:<user>`.

    The audit entry (action name, then the entry's fields) is written after the action
    succeeds; any NixFleetError becomes the one-line failure.
    """
    from nixfleet.dashboard.monitoring.audit_log import AuditLog
    from nixfleet.storage.db import Database
    from nixfleet.storage.migrate import upgrade

    settings = dashboard_settings()
    upgrade(settings.db_url)

    async def go() -> T:
        db = Database(settings.db_url)
        try:
            result = await action(settings, db)
            if audit:
                log = AuditLog(
                    db,
                    settings.audit_key,
                    settings.audit_anchor_path,
                    settings.audit_write_timeout_s,
                )
                await log.record(f"cli:{getpass.getuser()}", audit[0], address="local", **audit[1])
            return result
        finally:
            await db.close()

    try:
        return asyncio.run(go())
    except NixFleetError as exc:
        fail(str(exc))
