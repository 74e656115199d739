"""The `nixfleet` command: the command groups, assembled; each lives in its own module."""

from __future__ import annotations

from collections.abc import Callable

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


def _listed(name: str, help_text: str, run: Callable[[list[str]], None]) -> None:
    """List a command whose flags are its own argparse parser's, for `nixfleet --help`.

    `nixfleet serve` and `nixfleet agent` normally reach their parsers without typer
    (cli/launch.py); this is the way there from typer, e.g. `python -c` callers of main().
    """

    @app.command(
        name=name,
        help=help_text,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def forward(ctx: typer.Context) -> None:
        run(list(ctx.args))


_listed("serve", serve_cli.HELP, serve_cli.run)
_listed("agent", agent_cli.HELP, agent_cli.run)
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
