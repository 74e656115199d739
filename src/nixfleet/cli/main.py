"""The `nixfleet` command: each subcommand parses, builds Settings, and makes one call."""

from __future__ import annotations

import asyncio
import gc
import getpass
import logging
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
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(host_app, name="host")


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
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (NIXFLEET_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port; 0 picks a free one.")] = None,
    port_file: Annotated[Path | None, typer.Option(help="Write the bound port here.")] = None,
    log_level: str = "info",
) -> None:
    """Run the dashboard."""
    import uvicorn

    from nixfleet.dashboard.app import create_app
    from nixfleet.storage.migrate import upgrade

    _logging(log_level)
    settings = _settings(host=host, port=port)
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
    typer.echo(f"nixfleet: dashboard on http://{settings.host}:{bound}/", err=True)
    config = uvicorn.Config(
        create_app(settings),
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        ws_max_size=2**20,
        # Agent messages are small JSON: compressing them saves little and costs each
        # connection its own zlib state (about 40 KiB of the dashboard's memory per agent).
        ws_per_message_deflate=False,
        lifespan="on",
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
    allow_insecure: Annotated[bool, typer.Option(help="Allow http:// (loopback demos).")] = False,
    location: Annotated[str, typer.Option(help="Shown in the dashboard.")] = "",
    device_type: Annotated[str, typer.Option(help="e.g. server, laptop.")] = "",
    theme_color: Annotated[str, typer.Option(help="#rrggbb for the host's row.")] = "",
    timeout: Annotated[
        list[str] | None,
        typer.Option(help="KIND=WARN:KILL seconds, e.g. switch=900:3600 (repeatable)."),
    ] = None,
    log_level: str = "info",
) -> None:
    """Run the agent on this host."""
    from nixfleet.agent.daemon import AgentOptions, run_agent

    _logging(log_level)
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
        allow_insecure=allow_insecure,
        meta=_agent_meta(location, device_type, theme_color),
        rules=_agent_rules(timeout or []),
    )
    try:
        run_agent(opts)
    except NixFleetError as exc:
        _fail(f"agent: {str(exc).removeprefix('agent: ')}")
    except OSError as exc:
        _fail(f"agent: {exc}")


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
    """Print a random secret for NIXFLEET_AGENT_TOKEN_HASH_SECRET."""
    from nixfleet.security.tokens import new_secret

    typer.echo(new_secret())


@host_app.command("add")
def host_add(host_id: str, location: str = "", device_type: str = "") -> None:
    """Add a host and print its agent token (shown once)."""
    token = _with_fleet(
        lambda f: f.add_host(host_id, {"location": location, "device_type": device_type})
    )[1]
    typer.echo(token)


@host_app.command("remove")
def host_remove(host_id: str) -> None:
    """Remove a host with its command history."""
    _with_fleet(lambda f: f.remove_host(host_id))
    typer.echo(f"removed {host_id}")


@host_app.command("rotate-token")
def host_rotate(host_id: str) -> None:
    """Issue a new agent token for a host; the old one stops working."""
    typer.echo(_with_fleet(lambda f: f.rotate_token(host_id)))


def _with_fleet(action: Any) -> Any:
    from nixfleet.dashboard.fleet import Fleet
    from nixfleet.storage.bus import LocalBus
    from nixfleet.storage.db import Database
    from nixfleet.storage.migrate import upgrade

    settings = _settings()
    upgrade(settings.db_url)

    async def go() -> Any:
        db = Database(settings.db_url)
        try:
            return await action(Fleet(settings, db, LocalBus()))
        finally:
            await db.close()

    try:
        return asyncio.run(go())
    except NixFleetError as exc:
        _fail(str(exc))


def main() -> None:
    app()
