"""`nixfleet db`: database maintenance, and the one way commands open the database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from nixfleet.cli.common import dashboard_settings

if TYPE_CHECKING:
    from nixfleet.storage.db import Database

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Database maintenance.")


@app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending database migrations."""
    from nixfleet.storage.migrate import upgrade

    settings = dashboard_settings()
    upgrade(settings.db_url)
    typer.echo("nixfleet: database is up to date")


def run_db(action: Callable[[Database], Awaitable[T]]) -> T:
    """Return what action returns, run on the migrated database of the current Settings."""
    from nixfleet.storage.db import Database
    from nixfleet.storage.migrate import upgrade

    settings = dashboard_settings()
    upgrade(settings.db_url)

    async def go() -> T:
        db = Database(settings.db_url)
        try:
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(go())
