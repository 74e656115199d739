"""`nixfleet serve`: run the dashboard on one pre-bound socket."""

from __future__ import annotations

import gc
import socket
from pathlib import Path
from typing import Annotated

import typer

from nixfleet.cli.common import dashboard_settings, fail
from nixfleet.core.errors import ConfigError
from nixfleet.core.protocol import MAX_MESSAGE_BYTES

# `serve`: allocations before a young collection, then young/old collections before older.
GC_THRESHOLDS = (50_000, 50, 1000)


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (NIXFLEET_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port; 0 picks a free one.")] = None,
    port_file: Annotated[Path | None, typer.Option(help="Write the bound port here.")] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM chain).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key.")] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option(help="Ask agents for client certificates issued by this CA (mTLS)."),
    ] = None,
    log_level: str = "info",
) -> None:
    """Run the dashboard."""
    import ssl

    import uvicorn

    from nixfleet.cli.logs import configure
    from nixfleet.dashboard.app import create_app
    from nixfleet.dashboard.pipeline.tlspeer import TlsPeerWebSocketProtocol
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
    typer.echo(f"nixfleet: dashboard on {scheme}://{settings.host}:{bound}/", err=True)
    config = uvicorn.Config(
        asgi,
        log_level=log_level,
        # Our AccessLog middleware replaces uvicorn's (real client address, request id,
        # user); uvicorn's own records go through the handler configured above.
        access_log=False,
        log_config=None,
        # Forwarded headers are resolved by nixfleet.security.clientip, per request.
        proxy_headers=False,
        # The limit agents batch under (core.protocol); a larger frame gets close 1009.
        ws_max_size=MAX_MESSAGE_BYTES,
        ws=TlsPeerWebSocketProtocol,
        # Agent messages are small JSON: compressing them saves little and costs each
        # connection its own zlib state (about 40 KiB of the dashboard's memory per agent).
        ws_per_message_deflate=False,
        lifespan="on",
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        ssl_ca_certs=settings.client_ca,
        # Optional at the TLS level: browsers have no client certificate; hosts bound to
        # one are refused without it by the agent handshake. A presented one must verify.
        ssl_cert_reqs=ssl.CERT_OPTIONAL if settings.client_ca else ssl.CERT_NONE,
    )
    uvicorn.Server(config).run(sockets=[sock])
