"""The `nixfleet` command: the command groups, assembled; each lives in its own module."""

from __future__ import annotations

import typer

from nixfleet.cli import admin, alerts, audit, ctl, db, hosts, tokens, users
from nixfleet.cli import agent as agent_cli
from nixfleet.cli import serve as serve_cli
from nixfleet.cli.demo import demo

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="NixFleet: one live dashboard and one-click deploys for Nix machines.",
)


# `serve` and `agent` are listed here for `nixfleet --help`; their flags are their own
# argparse parsers' (`nixfleet serve` and `nixfleet agent` normally reach them without
# typer: cli/launch.py).
@app.command(
    help=serve_cli.HELP,
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def serve(ctx: typer.Context) -> None:
    serve_cli.run(list(ctx.args))


@app.command(
    help=agent_cli.HELP,
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def agent(ctx: typer.Context) -> None:
    agent_cli.run(list(ctx.args))


app.command()(demo)
app.add_typer(db.app, name="db")
app.add_typer(admin.app, name="admin")
app.add_typer(ctl.app, name="ctl")
admin.app.add_typer(hosts.app, name="host")
admin.app.add_typer(audit.app, name="audit")
admin.app.add_typer(alerts.app, name="alert")
admin.app.add_typer(users.app, name="user")
admin.app.add_typer(tokens.app, name="token")


def main() -> None:
    app()
