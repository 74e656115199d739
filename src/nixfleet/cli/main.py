"""The `nixfleet` command: each subcommand parses, builds Settings, and makes one call."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import getpass
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from nixfleet.core.errors import ConfigError, NixFleetError

# `serve`: allocations before a young collection, then young/old collections before older.
GC_THRESHOLDS = (50_000, 50, 1000)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="NixFleet: one live dashboard and one-click deploys for Nix machines.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
admin_app = typer.Typer(no_args_is_help=True, help="Administration helpers.")
host_app = typer.Typer(no_args_is_help=True, help="Manage hosts from the command line.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
alert_app = typer.Typer(no_args_is_help=True, help="Alert notifications.")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(host_app, name="host")
admin_app.add_typer(audit_app, name="audit")
admin_app.add_typer(alert_app, name="alert")


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(2)


def _settings(**overrides: Any) -> Any:
    from nixfleet.config import load_settings

    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _logging(level: str) -> None:
    from nixfleet.cli.logs import configure

    configure(level)


@app.command()
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

    settings = _settings(
        host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca
    )
    configure(log_level, settings.log_format, settings.access_log)
    try:
        asgi = create_app(settings)
    except ConfigError as exc:
        _fail(str(exc))
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
        ws_max_size=2**20,
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


@app.command()
def agent(
    url: Annotated[str, typer.Option(help="Dashboard URL, e.g. https://fleet.example.org")],
    host_id: Annotated[str, typer.Option(help="This host's id in the fleet.")],
    token_file: Annotated[Path, typer.Option(help="File holding this host's agent token.")],
    repo_dir: Annotated[Path, typer.Option(help="The agent's own clone of the config repo.")],
    repo_url: Annotated[str, typer.Option(help="Clone from here if repo-dir is empty.")] = "",
    branch: str = "main",
    state_dir: Annotated[Path, typer.Option(help="Journal of commands in flight.")] = Path(
        "/var/lib/nixfleet-agent"
    ),
    system_dir: Annotated[Path, typer.Option(help="Where current-system lives.")] = Path("/run"),
    os_kind: Annotated[str, typer.Option("--os", help="nixos or macos.")] = "nixos",
    macos_tool: Annotated[str, typer.Option(help="darwin-rebuild or home-manager.")] = (
        "darwin-rebuild"
    ),
    systemd_run: Annotated[str, typer.Option(help="auto, yes or no.")] = "auto",
    allow_insecure: Annotated[
        bool,
        typer.Option(
            help="Allow http:// and ws:// URLs: the token and all commands travel in plain "
            "text. Only for loopback demos; logged as a warning at start."
        ),
    ] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            help="PEM bundle of the CA(s) that may sign the dashboard's certificate. "
            "When given, only these are trusted (the system roots are not used)."
        ),
    ] = None,
    pin: Annotated[
        list[str] | None,
        typer.Option(
            help="sha256/<base64> hash of the dashboard's public key (SubjectPublicKeyInfo); "
            "repeatable, so a backup key can be pinned before a rotation. A server matching "
            "no pin is refused before any byte (or the token) is sent. "
            "`nixfleet admin spki-pin` prints it."
        ),
    ] = None,
    min_tls: Annotated[str, typer.Option(help="Lowest TLS version accepted: 1.2 or 1.3.")] = "1.2",
    command_rate: Annotated[
        str,
        typer.Option(
            help="At most N commands started per SECONDS (token bucket, kept in "
            "--state-dir); an over-limit command is answered `rejected: rate limited`."
        ),
    ] = "6/600",
    backoff_floor: Annotated[
        float, typer.Option(min=0.01, help="Shortest wait (s) between connection attempts.")
    ] = 1.0,
    backoff_cap: Annotated[
        float, typer.Option(min=0.1, help="Longest wait (s) between connection attempts.")
    ] = 300.0,
    breaker_threshold: Annotated[
        int,
        typer.Option(
            min=1,
            help="Failed dials in a row that open the circuit breaker; while open, one "
            "probe per --probe-interval.",
        ),
    ] = 5,
    probe_interval: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds between probes while the breaker is open."),
    ] = 60.0,
    location: Annotated[str, typer.Option(help="Shown in the dashboard.")] = "",
    device_type: Annotated[str, typer.Option(help="e.g. server, laptop.")] = "",
    theme_color: Annotated[str, typer.Option(help="#rrggbb for the host's row.")] = "",
    timeout: Annotated[
        list[str] | None,
        typer.Option(help="KIND=WARN:KILL seconds, e.g. switch=900:3600 (repeatable)."),
    ] = None,
    enroll_code_file: Annotated[
        Path | None,
        typer.Option(help="One-time enrollment code; exchanged for the token on first start."),
    ] = None,
    enroll_code: Annotated[
        str,
        typer.Option(
            help="The enrollment code itself (visible in ps; prefer --enroll-code-file).",
        ),
    ] = "",
    client_cert: Annotated[
        Path | None, typer.Option(help="Client certificate (PEM) for dashboards with mTLS.")
    ] = None,
    client_key: Annotated[
        Path | None, typer.Option(help="Its private key (default: in the certificate file).")
    ] = None,
    log_level: str = "info",
) -> None:
    """Run the agent on this host."""
    from nixfleet.agent.daemon import AgentOptions, run_agent

    _logging(log_level)
    transport = _agent_transport(
        ca_file, pin or [], min_tls, allow_insecure, backoff_floor, backoff_cap
    )
    transport = dataclasses.replace(
        transport,
        breaker_threshold=breaker_threshold,
        probe_interval_s=probe_interval,
        client_cert=client_cert,
        client_key=client_key,
    )
    if os_kind not in ("nixos", "macos"):
        _fail("agent: --os must be nixos or macos")
    if macos_tool not in ("darwin-rebuild", "home-manager"):
        _fail("agent: --macos-tool must be darwin-rebuild or home-manager")
    opts = AgentOptions(
        url=url,
        host_id=host_id,
        token_file=token_file,
        repo_dir=repo_dir,
        state_dir=state_dir,
        system_dir=system_dir,
        repo_url=repo_url,
        branch=branch,
        os_kind=os_kind,
        macos_tool=macos_tool,
        systemd_run=systemd_run,
        meta=_agent_meta(location, device_type, theme_color),
        rules=_agent_rules(timeout or []),
        transport=transport,
        command_rate=_agent_rate(command_rate),
        enroll_code=_enroll_code(enroll_code, enroll_code_file),
    )
    try:
        run_agent(opts)
    except NixFleetError as exc:
        _fail(f"agent: {str(exc).removeprefix('agent: ')}")
    except OSError as exc:
        _fail(f"agent: {exc}")


def _agent_transport(
    ca_file: Path | None,
    pins: list[str],
    min_tls: str,
    allow_insecure: bool,
    floor: float,
    cap: float,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> Any:
    from nixfleet.agent.transport import TransportOptions
    from nixfleet.security.tls import MIN_VERSIONS, parse_pin

    if min_tls not in MIN_VERSIONS:
        _fail(f"agent: --min-tls must be one of {', '.join(MIN_VERSIONS)}")
    if cap < floor:
        _fail("agent: --backoff-cap must not be below --backoff-floor")
    try:
        parsed = frozenset(parse_pin(p) for p in pins)
    except NixFleetError as exc:
        _fail(str(exc))
    return TransportOptions(
        ca_file=ca_file,
        pins=parsed,
        min_tls=min_tls,
        allow_insecure=allow_insecure,
        backoff_floor_s=floor,
        backoff_cap_s=cap,
        client_cert=client_cert,
        client_key=client_key,
    )


def _agent_rate(text: str) -> Any:
    from nixfleet.agent.ratelimit import parse_rate

    try:
        return parse_rate(text)
    except NixFleetError as exc:
        _fail(str(exc))


def _enroll_code(code: str, path: Path | None) -> str:
    if path is None:
        return code.strip()
    try:
        return path.read_text().strip()
    except OSError as exc:
        _fail(f"agent: --enroll-code-file: {exc.strerror}")
    return ""


def _agent_meta(location: str, device_type: str, theme_color: str) -> Any:
    from pydantic import ValidationError

    from nixfleet.core.protocol import HostMeta

    if not (location or device_type or theme_color):
        return None
    try:
        return HostMeta(location=location, device_type=device_type, theme_color=theme_color)
    except ValidationError as exc:
        err = exc.errors()[0]
        _fail(f"agent: --{str(err['loc'][0]).replace('_', '-')}: {err['msg']}")


def _agent_rules(specs: list[str]) -> Any:
    from nixfleet.core.commands import KIND_RULES, parse_timeout

    rules = dict(KIND_RULES)
    for spec in specs:
        try:
            kind, rule = parse_timeout(spec)
        except NixFleetError as exc:
            _fail(f"agent: --timeout: {exc}")
        rules[kind] = rule
    return rules


@app.command()
def demo(
    hosts: Annotated[int, typer.Option(min=1, max=200, help="Simulated hosts.")] = 6,
    port: int = 8000,
    data_dir: Path = Path("nixfleet-demo"),
    duration: Annotated[float, typer.Option(help="Seconds a fake build takes.")] = 4.0,
) -> None:
    """Start the dashboard and simulated hosts running the real agent (loopback only)."""
    from nixfleet.demo.run import run_demo

    _logging("warning")
    run_demo(hosts=hosts, port=port, data_dir=data_dir, build_seconds=duration)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending database migrations."""
    from nixfleet.storage.migrate import upgrade

    settings = _settings()
    upgrade(settings.db_url)
    typer.echo("nixfleet: database is up to date")


@admin_app.command("hash-password")
def hash_password() -> None:
    """Read a password (prompt or stdin) and print its argon2id hash."""
    from nixfleet.security.passwords import hash_password as do_hash

    password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline()
    password = password.rstrip("\n")
    if len(password) < 8:
        _fail("admin: password must be at least 8 characters")
    typer.echo(do_hash(password))


@admin_app.command("gen-secret")
def gen_secret() -> None:
    """Print a random secret for NIXFLEET_AGENT_TOKEN_HASH_SECRET or SESSION_SECRETS."""
    from nixfleet.security.tokens import new_secret

    typer.echo(new_secret())


@admin_app.command("spki-pin")
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
        _fail(f"admin: {source}: not a certificate ({exc})")
    except OSError as exc:
        _fail(f"admin: {source}: {exc}")
    typer.echo(pin_of(der))


def _fetch_cert(source: str) -> bytes:
    from nixfleet.agent.transport import peer_certificate

    host, sep, port = source.rpartition(":")
    if not sep or not port.isdigit() or not host:
        _fail(f"admin: {source!r} is neither a file nor HOST:PORT")
    typer.echo(
        f"admin: fetched from {source} without verification; compare the pin out of band",
        err=True,
    )
    der: bytes = peer_certificate(host.strip("[]"), int(port))
    return der


@admin_app.command("totp-setup")
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


@admin_app.command("check")
def check() -> None:
    """Print the security posture of the configuration; exit 1 when something is weak."""
    from nixfleet.config import load_settings
    from nixfleet.config.posture import posture

    try:
        settings = load_settings()
    except ConfigError:
        # Outside demo mode weak secrets stop loading; demo=True loads so they can be listed.
        try:
            settings = load_settings(demo=True).model_copy(update={"demo": False})
        except ConfigError as exc:
            _fail(str(exc))
    lines = posture(settings)
    for status, line in lines:
        typer.echo(f"{status.upper():5} {line}")
    if any(status == "weak" for status, _ in lines):
        raise typer.Exit(1)


@host_app.command("add")
def host_add(
    host_id: str,
    location: str = "",
    device_type: str = "",
    token: Annotated[
        bool, typer.Option("--token", help="Print an agent token instead of an enrollment code.")
    ] = False,
) -> None:
    """Add a host and print its one-time enrollment code (or, with --token, its token)."""

    async def add(f: Any) -> str:
        await f.add_host(host_id, {"location": location, "device_type": device_type})
        if token:
            return str(await f.rotate_token(host_id))
        code, _ = await f.identity.issue_enroll_code(host_id)
        return str(code)

    secret = _with_fleet(add, audit=("host_add", host_id))
    typer.echo("shown once; " + ("agent token" if token else "enrollment code") + ":", err=True)
    typer.echo(secret)


@host_app.command("enroll-code")
def host_enroll_code(host_id: str) -> None:
    """Print a new one-time enrollment code for a host (older unused codes stop working)."""
    typer.echo(
        _with_fleet(
            lambda f: f.identity.issue_enroll_code(host_id), audit=("enroll_code", host_id)
        )[0]
    )


@host_app.command("remove")
def host_remove(host_id: str) -> None:
    """Remove a host with its command history."""
    _with_fleet(lambda f: f.remove_host(host_id), audit=("host_remove", host_id))
    typer.echo(f"removed {host_id}")


@host_app.command("rotate-token")
def host_rotate(
    host_id: str,
    overlap: Annotated[
        int | None,
        typer.Option(min=0, help="Seconds the old token keeps working (default: setting)."),
    ] = None,
) -> None:
    """Issue a new agent token for a host; the old one stops working (after the overlap)."""
    typer.echo(
        _with_fleet(lambda f: f.rotate_token(host_id, overlap), audit=("token_rotate", host_id))
    )


@host_app.command("revoke")
def host_revoke(host_id: str) -> None:
    """Revoke a host's agent token: it stops at once; the agent is disconnected."""
    _with_fleet(lambda f: f.revoke_token(host_id), audit=("token_revoke", host_id))
    typer.echo(f"revoked the agent token of {host_id}")


@host_app.command("bind-cert")
def host_bind_cert(
    host_id: str,
    fingerprint: Annotated[str, typer.Argument(help="SHA-256 of the client certificate.")] = "",
    cert_file: Annotated[
        Path | None, typer.Option(help="Read the fingerprint from this PEM certificate.")
    ] = None,
    unbind: bool = False,
) -> None:
    """Require a client certificate (mTLS) for a host's agent, besides its token."""
    from nixfleet.security.clientcert import fingerprint_of_pem

    if cert_file is not None:
        try:
            fingerprint = fingerprint_of_pem(cert_file.read_text())
        except (OSError, ValueError) as exc:
            _fail(f"admin: --cert-file: {exc}")
    if not fingerprint and not unbind:
        _fail("admin: give a fingerprint, --cert-file or --unbind")
    bound = _with_fleet(
        lambda f: f.identity.bind_cert(host_id, None if unbind else fingerprint),
        audit=("cert_bind", host_id),
    )
    typer.echo(f"{host_id}: client certificate {bound or 'not required'}")


@admin_app.command("hash-agent-token")
def hash_agent_token() -> None:
    """Read a token on stdin; print its HMAC for NIXFLEET_SHARED_AGENT_TOKEN_HASH."""
    from nixfleet.security.tokens import hash_agent_token as do_hash

    settings = _settings()
    token = sys.stdin.readline().strip()
    if len(token) < 32:
        _fail("admin: the token must be at least 32 characters")
    typer.echo(do_hash(settings.agent_token_hash_secret.get_secret_value(), token))


@audit_app.command("verify")
def audit_verify(
    head: Annotated[
        str, typer.Option(help="Expected head hash (recorded earlier) to catch a cut-off end.")
    ] = "",
) -> None:
    """Check the audit log's hash chain; exit 1 naming the first edited or missing entry."""
    from nixfleet.storage.audit import verify as verify_chain

    count, head_hash, broken = _run_db(verify_chain)
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


@alert_app.command("test")
def alert_test() -> None:
    """Send a test message to every NIXFLEET_ALERT_URLS channel; exit 1 if one fails."""
    from nixfleet.dashboard.monitoring.notifier import Message, Notifier

    settings = _settings()
    if not settings.alert_url_list:
        _fail("alerts: no channels; set NIXFLEET_ALERT_URLS (Apprise URLs)")
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


def _run_db(action: Any) -> Any:
    from nixfleet.storage.db import Database
    from nixfleet.storage.migrate import upgrade

    settings = _settings()
    upgrade(settings.db_url)

    async def go() -> Any:
        db = Database(settings.db_url)
        try:
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(go())


def _with_fleet(action: Any, audit: tuple[str, str] | None = None) -> Any:
    """Run action on a Fleet; record it in the audit log as the Unix user (`cli:<name>`)."""
    import time

    from nixfleet.dashboard.fleet.service import Fleet
    from nixfleet.storage import audit as audit_store
    from nixfleet.storage.bus import LocalBus
    from nixfleet.storage.db import Database
    from nixfleet.storage.migrate import upgrade

    settings = _settings()
    upgrade(settings.db_url)

    async def go() -> Any:
        db = Database(settings.db_url)
        try:
            result = await action(Fleet(settings, db, LocalBus()))
            if audit:
                entry = {
                    "at": time.time(),
                    "actor": f"cli:{getpass.getuser()}"[:100],
                    "action": audit[0],
                    "host": audit[1][:63],
                    "address": "local",
                    "result": "ok",
                    "detail": None,
                }
                await audit_store.append(db, entry)
            return result
        finally:
            await db.close()

    try:
        return asyncio.run(go())
    except NixFleetError as exc:
        _fail(str(exc))


def main() -> None:
    app()
