"""`nixfleet serve`: run the dashboard on one pre-bound socket.

Parsed with argparse, not typer, as `nixfleet agent` is: typer is about 1.5 MiB of the
dashboard's resident memory and 40 modules for seven flags (docs/benchmarks.md; click stays,
uvicorn imports it for its own command line). `nixfleet serve …` reaches this parser
without importing typer (cli/launch.py).
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys
from pathlib import Path

from nixfleet.cli.common import dashboard_settings, fail
from nixfleet.core.errors import ConfigError

HELP = "Run the dashboard."
# `serve`: allocations before a young collection, then young/old collections before older.
GC_THRESHOLDS = (50_000, 50, 1000)


# (flag, type, help): an absent flag is None, and the NIXFLEET_* setting holds.
FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--host", str, "Address to bind (NIXFLEET_HOST)."),
    ("--port", int, "Port; 0 picks a free one."),
    ("--port-file", Path, "Write the bound port here."),
    ("--tls-cert", Path, "Serve HTTPS with this certificate (PEM chain)."),
    ("--tls-key", Path, "The certificate's private key."),
    ("--client-ca", Path, "Ask agents for client certificates issued by this CA (mTLS)."),
)
METAVARS = {str: "TEXT", int: "INTEGER", Path: "PATH"}


def parser(prog: str = "nixfleet serve") -> argparse.ArgumentParser:
    """Return serve's argument parser."""
    ap = argparse.ArgumentParser(prog=prog, description=HELP)
    for flag, kind, text in FLAGS:
        ap.add_argument(flag, type=kind, metavar=METAVARS[kind], help=text)
    ap.add_argument("--log-level", default="info", metavar="TEXT", help="(default: info)")
    return ap


def run(argv: list[str]) -> None:
    """Parse argv (the words after `serve`), then run the dashboard until it is stopped."""
    serve(**vars(parser().parse_args(argv)))


def serve(
    host: str | None = None,
    port: int | None = None,
    port_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    client_ca: Path | None = None,
    log_level: str = "info",
) -> None:
    """Run the dashboard."""
    # Importing the dashboard makes about 120,000 objects that live as long as the process;
    # the collector would walk them again and again as they pile up (about 0.1 s of CPU on
    # a start of about 1 s). Start-up runs without it, until the freeze below.
    gc.disable()
    from nixfleet.cli.logs import configure
    from nixfleet.dashboard import server
    from nixfleet.dashboard.app import create_app
    from nixfleet.storage.migrate import upgrade

    settings = dashboard_settings(
        host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca
    )
    configure(log_level, settings.log_format, settings.access_log)
    try:
        asgi = create_app(settings)
    except ConfigError as exc:
        fail(str(exc))
    upgrade(settings.db_url)
    # Thousands of agent connections make a large long-lived heap, and the default
    # thresholds run collections over it often enough to stall the event loop: at 10,000
    # agents a command's median wait fell from 835 ms to 7 ms with these (docs/benchmarks.md).
    gc.set_threshold(*GC_THRESHOLDS)
    # What start-up made (modules, the app, its routes, settings) lives as long as the
    # process: moved out of the collector's generations, no collection walks it again.
    # Not collected first: that walk cost more CPU (about 0.1 s) than the start-up garbage
    # it would free is worth (about 1,100 objects, 0.2 MiB of RSS; docs/benchmarks.md).
    gc.freeze()
    gc.enable()
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    # Listening now lets clients queue up while migrations and the lifespan finish, so the
    # port file can be written before uvicorn takes over the socket.
    sock.listen(2048)
    bound = sock.getsockname()[1]
    if port_file:
        port_file.write_text(str(bound))
    scheme = "https" if settings.tls_cert else "http"
    print(f"nixfleet: dashboard on {scheme}://{settings.host}:{bound}/", file=sys.stderr)
    server.run(asgi, settings, log_level, sock)
