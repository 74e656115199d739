"""`nixfleet admin audit`: the tamper-evident audit log."""

from __future__ import annotations

from typing import Annotated

import typer

from nixfleet.cli.db import run_db

app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


@app.command("verify")
def audit_verify(
    head: Annotated[
        str, typer.Option(help="Expected head hash (recorded earlier) to catch a cut-off end.")
    ] = "",
) -> None:
    """Check the audit log's hash chain; exit 1 naming the first edited or missing entry."""
    from nixfleet.storage.audit import verify as verify_chain

    count, head_hash, broken = run_db(verify_chain)
    if broken is not None:
        typer.echo(f"audit: chain broken at entry {broken.seq}: {broken.reason}", err=True)
        typer.echo(f"audit: the {count} entries before it verify", err=True)
        raise typer.Exit(1)
    if head and head != head_hash:
        typer.echo(
            f"audit: head is {head_hash} after {count} entries, not the expected {head}: "
            "entries at the end were removed or the chain was rebuilt",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"audit: {count} entries verified; head {head_hash}")
