"""`nixfleet admin audit`: the tamper-evident audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from nixfleet.cli.common import dashboard_settings
from nixfleet.cli.db import run_db

if TYPE_CHECKING:
    from nixfleet.core.audit import Verified
    from nixfleet.storage.audit import Anchor

app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")


def _parse_head(head: str) -> tuple[int | None, str]:
    seq, sep, hash_ = head.partition(":")
    if sep and seq.isdigit():
        return int(seq), hash_
    return None, head


@app.command("verify")
def audit_verify(
    head: Annotated[
        str,
        typer.Option(
            help="A head recorded earlier (SEQ:HASH as printed, or HASH): it must still be "
            "in the chain. New entries after it are fine."
        ),
    ] = "",
) -> None:
    """Check the audit log: hash chain, signatures, anchor; exit 1 naming what is wrong.

    1. The chain: no entry missing, edited, or re-linked.
    2. The signatures (key from NIXFLEET_AUDIT_SECRET or the agent token secret): an edit
       with recomputed hashes, or a row appended by someone without the key, fails.
    3. The anchor file (the head the dashboard last wrote, signed): entries up to it must
       all still be there, so deleting the newest entries fails.
    4. --head: a head recorded elsewhere (the log, a ticket) must still be in the chain.
    """
    from nixfleet.storage.audit import read_anchor, seq_of
    from nixfleet.storage.audit import verify as verify_chain

    settings = dashboard_settings()
    key = settings.audit_key
    anchor = read_anchor(settings.audit_anchor_path, key) if key else None
    if isinstance(anchor, str):
        _broken(f"audit: {anchor}")
    want_seq, want_hash = _parse_head(head)
    if head and want_seq is None:
        want_seq = run_db(lambda db: seq_of(db, want_hash))
    watch = {s for s in (want_seq, anchor.seq if anchor else None) if s is not None}
    result: Verified = run_db(lambda db: verify_chain(db, key, watch))
    if result.broken is not None:
        typer.echo(
            f"audit: chain broken at entry {result.broken.seq}: {result.broken.reason}", err=True
        )
        _broken(f"audit: the {result.count} entries before it verify")
    if anchor is not None:
        _check_anchor(result, anchor)
    if head:
        _check_head(result, want_seq, want_hash)
    _report(result, key is not None)


def _check_anchor(result: Verified, anchor: Anchor) -> None:
    if anchor.seq > result.head_seq:
        _broken(
            f"audit: entry {anchor.seq} is in the signed anchor but the chain ends at "
            f"{result.head_seq}: entries at the end were removed"
        )
    if (result.seen or {}).get(anchor.seq) != anchor.hash:
        _broken(f"audit: entry {anchor.seq} differs from the signed anchor: the chain was rebuilt")


def _check_head(result: Verified, seq: int | None, hash_: str) -> None:
    if seq is None or (result.seen or {}).get(seq) != hash_:
        _broken(
            f"audit: the recorded head {seq or ''}{':' if seq else ''}{hash_} is not in the "
            f"chain (now {result.count} entries): entries were removed or the chain was rebuilt"
        )


def _report(result: Verified, signed: bool) -> None:
    head = f"{result.head_seq}:{result.head_hash}"
    typer.echo(f"audit: {result.count} entries verified; head {head}")
    if not signed:
        typer.echo(
            "audit: no audit key (NIXFLEET_AUDIT_SECRET or NIXFLEET_AGENT_TOKEN_HASH_SECRET): "
            "signatures and the anchor were not checked",
            err=True,
        )
    elif result.unsigned:
        typer.echo(f"audit: {result.unsigned} entries predate signing (not signed)", err=True)


def _broken(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(1)
