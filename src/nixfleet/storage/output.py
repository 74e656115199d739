"""Where command output lines are stored, keyed by (command, sequence number)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from nixfleet.storage.db import Database
from nixfleet.storage.tables import output


async def append(
    db: Database, command_id: str, lines: Sequence[dict[str, Any]], now: float
) -> None:
    """Store lines; a line whose sequence number is already stored is skipped (replay-safe)."""
    if not lines:
        return
    rows = [
        {
            "command_id": command_id,
            "seq": ln["seq"],
            "stream": ln["stream"],
            "text": ln["text"],
            "ts": now,
        }
        for ln in lines
    ]
    async with db.engine.begin() as conn:
        await conn.execute(db.insert_ignore(output), rows)


async def lines(
    db: Database, command_id: str, after_seq: int = 0, limit: int = 20000
) -> list[dict[str, Any]]:
    """Return a command's lines after after_seq, in order."""
    query = (
        select(output.c.seq, output.c.stream, output.c.text)
        .where(output.c.command_id == command_id, output.c.seq > after_seq)
        .order_by(output.c.seq)
        .limit(limit)
    )
    async with db.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]
