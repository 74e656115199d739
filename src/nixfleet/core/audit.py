"""The audit chain: how one entry's hash covers its content and every entry before it.

hash = sha256(prev_hash + canonical JSON of the entry), where the first entry's prev_hash is
GENESIS. Editing an entry changes its hash and breaks the next link; deleting one leaves a
gap in `seq` and a broken link. Deleting only the newest entries cannot be seen from the
chain itself: compare the head hash with one recorded elsewhere (`audit verify --head`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
HASHED_FIELDS = ("seq", "at", "actor", "action", "host", "address", "result", "detail")


def canonical(entry: Mapping[str, Any]) -> str:
    """Return the entry's hashed fields as canonical JSON (sorted keys, no spaces)."""
    body = {k: entry.get(k) for k in HASHED_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    """Return the hash that chains entry to prev_hash."""
    return hashlib.sha256((prev_hash + canonical(entry)).encode()).hexdigest()


@dataclass(frozen=True)
class Break:
    seq: int
    reason: str


def verify(entries: Iterable[Mapping[str, Any]]) -> tuple[int, str, Break | None]:
    """Return (entries checked, head hash, first break or None), entries in seq order.

    1. Each entry's seq is one more than the previous one (the first is 1).
    2. Its prev_hash is the previous entry's hash (GENESIS for the first).
    3. Its stored hash equals the hash recomputed from its content.
    """
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for entry in entries:
        seq = int(entry["seq"])
        if seq != expected_seq:
            return count, prev_hash, Break(expected_seq, f"entry {expected_seq} is missing")
        if entry["prev_hash"] != prev_hash:
            return count, prev_hash, Break(seq, "its link to the previous entry is broken")
        if entry["hash"] != entry_hash(prev_hash, entry):
            return count, prev_hash, Break(seq, "its content does not match its hash")
        prev_hash, expected_seq, count = entry["hash"], seq + 1, count + 1
    return count, prev_hash, None
