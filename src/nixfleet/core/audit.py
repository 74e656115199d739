"""The audit chain: how one entry's hash covers its content and every entry before it.

hash = sha256(prev_hash + canonical JSON of the entry), where the first entry's prev_hash is
GENESIS. Editing an entry changes its hash and breaks the next link; deleting one leaves a
gap in `seq` and a broken link.

The chain alone cannot tell a rebuilt chain from the real one: whoever can write the
database can recompute every hash. So each entry also carries a MAC of its hash under a
key that is *not* in the database (NIXFLEET_AUDIT_SECRET, or one derived from the agent
token secret): an edit with recomputed hashes, or an appended row, has no valid MAC.
Deleting the newest entries leaves a valid, shorter chain; the signed anchor (the newest
seq and hash, kept outside the database and in the log) catches that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Iterable, Mapping
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


def entry_mac(key: bytes, hash_: str) -> str:
    """Return the MAC that proves an entry with this hash was written by a key holder."""
    return hmac.new(key, b"nixfleet audit entry " + hash_.encode(), hashlib.sha256).hexdigest()


def anchor_mac(key: bytes, seq: int, hash_: str) -> str:
    """Return the MAC of an anchor (the chain's head at some moment)."""
    message = f"nixfleet audit anchor {seq} {hash_}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Break:
    seq: int
    reason: str


@dataclass(frozen=True)
class Verified:
    count: int  # entries that verify (before the break, if any)
    head_seq: int
    head_hash: str
    broken: Break | None
    unsigned: int = 0  # entries from before signing was on (first in the chain)
    seen: dict[int, str] | None = None  # seq → hash of the watched entries (anchors)


def verify(
    entries: Iterable[Mapping[str, Any]], key: bytes | None = None, watch: Collection[int] = ()
) -> Verified:
    """Return what verifies of entries given in seq order.

    1. Each entry's seq is one more than the previous one (the first is 1).
    2. Its prev_hash is the previous entry's hash (GENESIS for the first).
    3. Its stored hash equals the hash recomputed from its content.
    4. With a key: its MAC matches. Entries without one are accepted only before the
       first signed entry (written before signing existed); after it, a missing MAC is
       an entry someone else wrote.
    The hashes of the entries in `watch` are returned in `seen` (to compare anchors).
    """
    prev_hash, expected_seq, count, unsigned, signed_seen = GENESIS, 1, 0, 0, False
    seen: dict[int, str] = {}

    def result(broken: Break | None) -> Verified:
        return Verified(count, expected_seq - 1, prev_hash, broken, unsigned, seen)

    for entry in entries:
        seq = int(entry["seq"])
        if seq != expected_seq:
            return result(Break(expected_seq, f"entry {expected_seq} is missing"))
        if entry["prev_hash"] != prev_hash:
            return result(Break(seq, "its link to the previous entry is broken"))
        if entry["hash"] != entry_hash(prev_hash, entry):
            return result(Break(seq, "its content does not match its hash"))
        if key is not None:
            mac = entry.get("mac")
            if not mac and signed_seen:
                return result(Break(seq, "it is not signed with the audit key (a forged row)"))
            if mac and not hmac.compare_digest(mac, entry_mac(key, entry["hash"])):
                return result(Break(seq, "its signature does not match (rewritten or forged)"))
            signed_seen = signed_seen or bool(mac)
            unsigned += not mac
        if seq in watch:
            seen[seq] = entry["hash"]
        prev_hash, expected_seq, count = entry["hash"], seq + 1, count + 1
    return result(None)
