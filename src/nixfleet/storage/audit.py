"""Where the audit log is stored: an append-only, hash-chained, signed table, and the
anchor file that records its head outside the database.

Appends in one process are serialized by the caller's lock; across replicas (and processes
such as the CLI) by the database's write lock, taken before the head is read. The unique
`prev_hash` stays the last guard: a second writer that chained after the same head fails
its INSERT and tries again, so the chain never forks.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import desc, insert, select
from sqlalchemy.exc import IntegrityError

from nixfleet.core import audit as chain
from nixfleet.storage.db import Database
from nixfleet.storage.tables import audit_log as t

_APPEND_TRIES = 5


def clean(value: Any) -> Any:
    """Return value with strings the database could not encode (lone surrogates) repaired.

    An entry that cannot be stored would be an action without its entry.
    """
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


# Built once (a command writes an entry): building a statement costs as much CPU as
# running it.
_HEAD = select(t.c.seq, t.c.hash).order_by(desc(t.c.seq)).limit(1)
_INSERT = insert(t)


async def append(db: Database, entry: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """Return the stored entry, chained after the current head and signed with key."""
    return (await append_many(db, [entry], key))[-1]


async def append_many(
    db: Database, entries: list[dict[str, Any]], key: bytes | None
) -> list[dict[str, Any]]:
    """Return the entries as stored, chained in order after the head, in one transaction.

    One transaction for many entries: the write lock is what replicas queue for, so
    entries that arrive together take it once (on PostgreSQL, four round trips per
    transaction under the lock bounded a fleet's commands to about 60 a second).
    """
    entries = [clean(e) for e in entries]
    for attempt in range(_APPEND_TRIES):
        try:
            async with db.engine.begin() as conn:
                # Replicas take turns: the head read here is still the head at the INSERT.
                await db.write_lock(conn, "audit_log")
                head = (await conn.execute(_HEAD)).first()
                seq, prev = (head[0], head[1]) if head else (0, chain.GENESIS)
                rows = []
                for entry in entries:
                    seq += 1
                    row = {**entry, "seq": seq, "prev_hash": prev}
                    row["hash"] = prev = chain.entry_hash(prev, row)
                    row["mac"] = chain.entry_mac(key, row["hash"]) if key else None
                    rows.append(row)
                await conn.execute(_INSERT, rows)
            return rows
        except IntegrityError:
            if attempt == _APPEND_TRIES - 1:
                raise
    raise AssertionError("unreachable")


async def search(
    db: Database,
    *,
    actor: str = "",
    action: str = "",
    host: str = "",
    since: float | None = None,
    until: float | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Return matching entries, newest first; empty filters match everything."""
    query = select(t)
    if actor:
        query = query.where(t.c.actor == actor)
    if action:
        query = query.where(t.c.action == action)
    if host:
        query = query.where(t.c.host == host)
    if since is not None:
        query = query.where(t.c.at >= since)
    if until is not None:
        query = query.where(t.c.at < until)
    query = query.order_by(desc(t.c.seq)).limit(limit)
    async with db.reader.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def all_in_order(db: Database, batch: int = 1000) -> AsyncIterator[dict[str, Any]]:
    """Yield every entry in seq order, a batch at a time (for verify and export)."""
    after = 0
    while True:
        query = select(t).where(t.c.seq > after).order_by(t.c.seq).limit(batch)
        async with db.reader.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(query)]
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]


async def verify(db: Database, key: bytes | None, watch: Collection[int] = ()) -> chain.Verified:
    """Return what verifies of the stored chain (see core.audit.verify)."""
    return chain.verify([row async for row in all_in_order(db)], key, watch)


async def seq_of(db: Database, hash_: str) -> int | None:
    """Return the seq of the entry with this hash, or None."""
    async with db.reader.connect() as conn:
        found = (await conn.execute(select(t.c.seq).where(t.c.hash == hash_))).scalar()
    return int(found) if found is not None else None


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str


def write_anchor(path: Path, key: bytes, seq: int, hash_: str) -> None:
    """Record the head in path, signed, replacing the file atomically."""
    body = {"seq": seq, "hash": hash_, "mac": chain.anchor_mac(key, seq, hash_)}
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(body) + "\n")
    os.replace(tmp, path)


def read_anchor(path: Path, key: bytes) -> Anchor | str | None:
    """Return the anchor in path, None when there is none, or why it cannot be believed."""
    try:
        body = json.loads(path.read_text())
        seq, hash_, mac = int(body["seq"]), str(body["hash"]), str(body["mac"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"the anchor file {path} is unreadable ({type(exc).__name__})"
    if not hmac.compare_digest(mac, chain.anchor_mac(key, seq, hash_)):
        return f"the anchor file {path} is not signed with the audit key"
    return Anchor(seq, hash_)
