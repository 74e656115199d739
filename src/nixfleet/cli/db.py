"""`nixfleet db`: database maintenance, and the one way commands open the database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from nixfleet.cli.common import dashboard_settings, fail

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


@app.command("copy")
def db_copy(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            envvar="NIXFLEET_DB_COPY_TO",
            help="URL of the new, empty database, e.g. postgresql://user@host/nixfleet "
            "(or NIXFLEET_DB_COPY_TO, which keeps a password off the command line).",
        ),
    ],
) -> None:
    """Copy the whole database (NIXFLEET_DATABASE_URL, default SQLite) into an empty one.

    Stop the dashboard first: what it writes after the copy starts stays behind. Then point
    NIXFLEET_DATABASE_URL at the new database.
    """
    from nixfleet.storage.db import Database, engine_url
    from nixfleet.storage.migrate import upgrade
    from nixfleet.storage.transfer import TransferError, copy_all

    settings = dashboard_settings()
    try:
        if engine_url(to) == engine_url(settings.db_url):
            fail("db copy: --to names the database being copied; give a new, empty one")
        upgrade(settings.db_url)
        upgrade(to)
    except ValueError as exc:
        fail(f"db copy: {exc}")

    async def go() -> dict[str, int]:
        source, target = Database(settings.db_url), Database(to)
        try:
            return await copy_all(source, target)
        finally:
            await source.close()
            await target.close()

    try:
        counts = asyncio.run(go())
    except TransferError as exc:
        fail(f"db copy: {exc}; nothing was written")
    for table, n in counts.items():
        typer.echo(f"  {table}: {n} rows")
    typer.echo("db copy: done; set NIXFLEET_DATABASE_URL to the new database and start serve")


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
