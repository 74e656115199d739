"""`nixfleet admin`: secrets, hashes, pins and the configuration's security posture."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from nixfleet.cli.common import dashboard_settings, fail
from nixfleet.core.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Administration helpers.")


@app.command("hash-password")
def hash_password() -> None:
    """Read a password (prompt or stdin) and print its argon2id hash."""
    from nixfleet.security.passwords import hash_password as do_hash

    password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\n")
    if len(password) < 8:
        fail("admin: password must be at least 8 characters")
    typer.echo(do_hash(password))


@app.command("gen-secret")
def gen_secret() -> None:
    """Print a random secret for NIXFLEET_AGENT_TOKEN_HASH_SECRET or SESSION_SECRETS."""
    from nixfleet.security.tokens import new_secret

    typer.echo(new_secret())


@app.command("spki-pin")
def spki_pin(
    source: Annotated[str, typer.Argument(help="A PEM/DER certificate file, or HOST:PORT.")],
) -> None:
    """Print the sha256/<base64> pin of a certificate's public key, for `agent --pin`."""
    from nixfleet.security.tls import cert_der_from_file
    from nixfleet.security.tls import spki_pin as pin_of

    path = Path(source)
    try:
        der = cert_der_from_file(path.read_bytes()) if path.exists() else _fetch_cert(source)
    except ValueError as exc:
        fail(f"admin: {source}: not a certificate ({exc})")
    except OSError as exc:
        fail(f"admin: {source}: {exc}")
    typer.echo(pin_of(der))


def _fetch_cert(source: str) -> bytes:
    from nixfleet.agent.transport import peer_certificate

    host, sep, port = source.rpartition(":")
    if not sep or not port.isdigit() or not host:
        fail(f"admin: {source!r} is neither a file nor HOST:PORT")
    typer.echo(
        f"admin: fetched from {source} without verification; compare the pin out of band",
        err=True,
    )
    der: bytes = peer_certificate(host.strip("[]"), int(port))
    return der


@app.command("totp-setup")
def totp_setup(
    account: Annotated[str, typer.Option(help="Account name shown in the app.")] = "admin",
) -> None:
    """Print a new TOTP secret, its otpauth:// URI and a QR code to scan."""
    import segno

    from nixfleet.security import totp

    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, account)
    segno.make(uri, error="m").terminal(out=sys.stdout, compact=True)
    typer.echo(f"secret: {secret}")
    typer.echo(f"uri:    {uri}")
    typer.echo(
        "Scan the code (or type the secret) into an authenticator app, then set\n"
        "NIXFLEET_TOTP_SECRET (or NIXFLEET_TOTP_SECRET_FILE) to the secret and\n"
        "NIXFLEET_REQUIRE_TOTP=true so the dashboard refuses to start without it."
    )


@app.command("check")
def check() -> None:
    """Print the security posture of the configuration; exit 1 when something is weak."""
    from nixfleet.config import load_settings
    from nixfleet.config.posture import posture

    try:
        settings = load_settings()
    except ConfigError:
        # Outside demo mode weak secrets stop loading; demo=True loads so they can be listed
        # (on loopback, which demo mode insists on; the real address is put back after).
        host = os.environ.get("NIXFLEET_HOST", "127.0.0.1")
        relaxed = dashboard_settings(demo=True, host="127.0.0.1")
        settings = relaxed.model_copy(update={"demo": False, "host": host})
    lines = posture(settings)
    for status, line in lines:
        typer.echo(f"{status.upper():5} {line}")
    if any(status == "weak" for status, _ in lines):
        raise typer.Exit(1)


@app.command("hash-agent-token")
def hash_agent_token() -> None:
    """Read a token on stdin; print its HMAC for NIXFLEET_SHARED_AGENT_TOKEN_HASH."""
    from nixfleet.security.tokens import hash_agent_token as do_hash

    settings = dashboard_settings()
    token = sys.stdin.readline().strip()
    if len(token) < 32:
        fail("admin: the token must be at least 32 characters")
    typer.echo(do_hash(settings.agent_token_hash_secret.get_secret_value(), token))
