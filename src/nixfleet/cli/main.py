"""The `nixfleet` command: the command groups, assembled; each lives in its own module."""

from __future__ import annotations

import typer

from nixfleet.cli import admin, alerts, audit, db, hosts, tokens, users
from nixfleet.cli.agent import agent
from nixfleet.cli.demo import demo
from nixfleet.cli.serve import serve

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="NixFleet: one live dashboard and one-click deploys for Nix machines.",
)
app.command()(serve)
app.command()(agent)
app.command()(demo)
app.add_typer(db.app, name="db")
app.add_typer(admin.app, name="admin")
admin.app.add_typer(hosts.app, name="host")
admin.app.add_typer(audit.app, name="audit")
admin.app.add_typer(alerts.app, name="alert")
admin.app.add_typer(users.app, name="user")
admin.app.add_typer(tokens.app, name="token")


def main() -> None:
    app()
