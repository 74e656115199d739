"""`nixfleet admin host`: add, remove and re-credential hosts, each with its audit entry."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from nixfleet.cli.common import fail, with_database
from nixfleet.core.errors import NixFleetError
from nixfleet.core.hostid import canonical_host_id

if TYPE_CHECKING:
    from nixfleet.dashboard.fleet.service import Fleet

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Manage hosts from the command line.")


@app.command("add")
def host_add(
    host_id: str,
    location: str = "",
    device_type: str = "",
    token: Annotated[
        bool, typer.Option("--token", help="Print an agent token instead of an enrollment code.")
    ] = False,
    label: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE label (repeatable), e.g. role=web.")
    ] = None,
) -> None:
    """Add a host and print its one-time enrollment code (or, with --token, its token)."""
    labels = _assignments(label or [])[0]

    async def add(f: Fleet) -> str:
        await f.add_host(host_id, {"location": location, "device_type": device_type}, labels)
        if token:
            return str(await f.rotate_token(host_id))
        code, _ = await f.identity.issue_enroll_code(host_id)
        return str(code)

    secret = with_fleet(add, audit=("host_add", host_id))
    typer.echo("shown once; " + ("agent token" if token else "enrollment code") + ":", err=True)
    typer.echo(secret)


@app.command("label")
def host_label(
    host_id: str,
    changes: Annotated[
        list[str] | None,
        typer.Argument(help="KEY=VALUE sets a label, KEY- removes it; none: list them."),
    ] = None,
) -> None:
    """Set or remove a host's labels (the dashboard's own; a key the host's configuration
    sets wins), then print them with where each came from."""
    set_, remove = _assignments(changes or [])

    async def edit(f: Fleet) -> dict[str, Any]:
        if not changes:
            return await f.host(canonical_host_id(host_id))
        return await f.edit_labels(host_id, set_, remove)

    host = with_fleet(edit, audit=("host_labels", host_id) if changes else None)
    for key, value in host["labels"].items():
        typer.echo(f"{key}={value}\t(from {host['label_sources'][key]})")


@app.command("gate")
def host_gate(
    host_id: str,
    gate: Annotated[
        str | None,
        typer.Argument(
            help='The health gate as JSON, e.g. \'{"deadline_s": 60, "checks": [{"kind": '
            '"unit", "unit": "nginx"}]}\'; "none" clears it (the fleet\'s default then). '
            "Absent: print it."
        ),
    ] = None,
) -> None:
    """Set, clear or print the health gate the host's switches carry by default."""
    from pydantic import ValidationError

    from nixfleet.core.gates import HealthGate

    chosen: HealthGate | None = None
    if gate is not None and gate.strip().lower() != "none":
        try:
            chosen = HealthGate.model_validate_json(gate)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            fail(f"host gate: {where + ': ' if where else ''}{first['msg']}")

    async def act(f: Fleet) -> dict[str, Any]:
        if gate is None:
            return await f.host(canonical_host_id(host_id))
        return await f.set_health_gate(host_id, chosen)

    host = with_fleet(act, audit=("health_gate", host_id) if gate is not None else None)
    current = host["deploy"].get("gate")
    if current is None:
        typer.echo(f"{host['id']}: no health gate")
        return
    source = current.pop("source")
    typer.echo(f"{host['id']}: {json.dumps(current)} (the {source}'s default)")


def _assignments(words: list[str]) -> tuple[dict[str, str], set[str]]:
    from nixfleet.core.labels import parse_assignments

    try:
        return parse_assignments(words)
    except NixFleetError as exc:
        fail(str(exc))


@app.command("enroll-code")
def host_enroll_code(host_id: str) -> None:
    """Print a new one-time enrollment code for a host (older unused codes stop working)."""
    code, _ = with_fleet(
        lambda f: f.identity.issue_enroll_code(host_id), audit=("enroll_code", host_id)
    )
    typer.echo(code)


@app.command("remove")
def host_remove(host_id: str) -> None:
    """Remove a host with its command history."""
    with_fleet(lambda f: f.remove_host(host_id), audit=("host_remove", host_id))
    typer.echo(f"removed {host_id}")


@app.command("rotate-token")
def host_rotate(
    host_id: str,
    overlap: Annotated[
        int | None,
        typer.Option(min=0, help="Seconds the old token keeps working (default: setting)."),
    ] = None,
) -> None:
    """Issue a new agent token for a host; the old one stops working (after the overlap)."""
    typer.echo(
        with_fleet(lambda f: f.rotate_token(host_id, overlap), audit=("token_rotate", host_id))
    )


@app.command("revoke")
def host_revoke(host_id: str) -> None:
    """Revoke a host's agent token: it stops at once; the agent is disconnected."""
    with_fleet(lambda f: f.revoke_token(host_id), audit=("token_revoke", host_id))
    typer.echo(f"revoked the agent token of {host_id}")


@app.command("bind-cert")
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
            fail(f"admin: --cert-file: {exc}")
    if not fingerprint and not unbind:
        fail("admin: give a fingerprint, --cert-file or --unbind")
    bound = with_fleet(
        lambda f: f.identity.bind_cert(host_id, None if unbind else fingerprint),
        audit=("cert_bind", host_id),
    )
    typer.echo(f"{host_id}: client certificate {bound or 'not required'}")


def with_fleet(action: Callable[[Fleet], Awaitable[T]], audit: tuple[str, str] | None = None) -> T:
    """Run action on a Fleet; record it in the audit log as the Unix user (`cli:<name>`)."""
    from nixfleet.dashboard.fleet.service import Fleet
    from nixfleet.storage.bus import LocalBus

    return with_database(
        lambda settings, db: action(Fleet(settings, db, LocalBus())),
        (audit[0], {"host": audit[1]}) if audit else None,
    )
