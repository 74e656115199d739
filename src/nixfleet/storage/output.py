"""Where command output lines are stored, keyed by (command, sequence number).

Each command may store at most `max_bytes` of line text (NIXFLEET_OUTPUT_MAX_BYTES): the
line that would pass it is replaced by one system line saying so, and later lines are
dropped. The command's row counts the bytes, so the check costs no scan of its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import delete, select, update

from nixfleet.storage.asyncengine import AsyncConnection
from nixfleet.storage.db import Database
from nixfleet.storage.tables import commands, output

# The default of NIXFLEET_OUTPUT_MAX_BYTES (config cannot be imported from storage).
DEFAULT_MAX_BYTES = 64 * 2**20
TRUNCATED = "output truncated: this command printed more than {limit} bytes; the rest was dropped"


class Appended(NamedTuple):
    lines: list[dict[str, Any]]  # stored now, in order
    truncated: bool  # this call reached the quota (its last line is the marker)


async def append(
    db: Database,
    command_id: str,
    lines: Sequence[dict[str, Any]],
    now: float,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Appended:
    """Store lines within the command's quota; return what was stored now.

    1. Lines whose sequence number is already stored are skipped (replay-safe).
    2. Lines are kept while the command's stored bytes stay within max_bytes; the first
       that does not fit becomes the truncation marker (same sequence number, stream
       `system`) and every later line is dropped, now and in later batches.
    """
    if not lines:
        return Appended([], False)
    async with db.engine.begin() as conn:
        row = (
            await conn.execute(
                select(commands.c.output_bytes, commands.c.output_truncated).where(
                    commands.c.id == command_id
                )
            )
        ).first()
        if row is None or row.output_truncated:
            return Appended([], False)
        fresh = await _not_stored(conn, command_id, lines)
        kept, used, truncated = _within_quota(fresh, row.output_bytes, max_bytes)
        if kept:
            await conn.execute(
                db.insert_ignore(output),
                [{"command_id": command_id, **ln, "ts": now} for ln in kept],
            )
            await conn.execute(
                update(commands)
                .where(commands.c.id == command_id)
                .values(output_bytes=used, output_truncated=truncated)
            )
    return Appended(kept, truncated)


async def _not_stored(
    conn: AsyncConnection, command_id: str, lines: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    seqs = [ln["seq"] for ln in lines]
    stored = {
        r[0]
        for r in await conn.execute(
            select(output.c.seq).where(
                output.c.command_id == command_id,
                output.c.seq >= min(seqs),
                output.c.seq <= max(seqs),
            )
        )
    }
    return [ln for ln in lines if ln["seq"] not in stored]


def _within_quota(
    lines: list[dict[str, Any]], used: int, max_bytes: int
) -> tuple[list[dict[str, Any]], int, bool]:
    """Return (lines to store, bytes used after them, whether the quota was reached)."""
    kept: list[dict[str, Any]] = []
    for ln in sorted(lines, key=lambda x: x["seq"]):
        size = len(ln["text"].encode("utf-8", "replace"))
        if used + size > max_bytes:
            marker = TRUNCATED.format(limit=max_bytes)
            kept.append({"seq": ln["seq"], "stream": "system", "text": marker})
            return kept, used, True
        kept.append({"seq": ln["seq"], "stream": ln["stream"], "text": ln["text"]})
        used += size
    return kept, used, False


async def lines(
    db: Database, command_id: str, after_seq: int = 0, limit: int = 1000
) -> list[dict[str, Any]]:
    """Return up to limit of a command's lines after after_seq, in order, each with the
    time it was stored (`ts`, for the log viewer's time column)."""
    query = (
        select(output.c.seq, output.c.stream, output.c.text, output.c.ts)
        .where(output.c.command_id == command_id, output.c.seq > after_seq)
        .order_by(output.c.seq)
        .limit(limit)
    )
    async with db.reader.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def prune(db: Database, finished_before: float, batch: int = 200) -> int:
    """Delete the output of up to batch commands finished before the cutoff; return how many.

    The command rows stay (with output_pruned set), so history still shows what ran.
    """
    async with db.engine.begin() as conn:
        ids = [
            r[0]
            for r in await conn.execute(
                select(commands.c.id)
                .where(
                    commands.c.finished_at.is_not(None),
                    commands.c.finished_at < finished_before,
                    commands.c.output_pruned.is_(False),
                )
                .limit(batch)
            )
        ]
        if ids:
            await conn.execute(delete(output).where(output.c.command_id.in_(ids)))
            await conn.execute(
                update(commands).where(commands.c.id.in_(ids)).values(output_pruned=True)
            )
    return len(ids)
