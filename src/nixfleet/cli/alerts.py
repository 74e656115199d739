"""`nixfleet admin alert`: alert notifications."""

from __future__ import annotations

import asyncio

import typer

from nixfleet.cli.common import dashboard_settings, fail

app = typer.Typer(no_args_is_help=True, help="Alert notifications.")


@app.command("test")
def alert_test() -> None:
    """Send a test message to every NIXFLEET_ALERT_URLS channel; exit 1 if one fails."""
    from nixfleet.dashboard.monitoring.notifier import Message, Notifier

    settings = dashboard_settings()
    if not settings.alert_url_list:
        fail("alerts: no channels; set NIXFLEET_ALERT_URLS (Apprise URLs)")
    notifier = Notifier(
        settings.alert_url_list, settings.alert_allow_private, retries=0, backoff_s=0
    )
    message = Message(
        "NixFleet test alert", "This is a test message from `nixfleet admin alert test`.", "info"
    )
    results = asyncio.run(notifier.send_now(message))
    for r in results:
        status = "ok" if r["ok"] else f"FAILED: {r['last_error']}"
        typer.echo(f"{r['channel']}: {status}")
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)
