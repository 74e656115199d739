"""The audit chain: every edit, deletion or reordering breaks it at the right entry, and
with the audit key a rebuilt chain or a forged row is caught too."""

from __future__ import annotations

from nixfleet.core.audit import GENESIS, entry_hash, entry_mac, verify

KEY = b"the audit key, kept outside the database"


def chain(n: int, key: bytes | None = KEY, first_signed: int = 1) -> list[dict]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        row = {
            "seq": seq,
            "at": 1700000000.0 + seq,
            "actor": "admin",
            "action": "command",
            "host": "atlas",
            "address": "192.0.2.7",
            "result": "accepted",
            "detail": {"command": "switch", "n": seq},
            "prev_hash": prev,
        }
        row["hash"] = prev = entry_hash(prev, row)
        row["mac"] = entry_mac(key, row["hash"]) if key and seq >= first_signed else None
        rows.append(row)
    return rows


def rehash_from(rows: list[dict], index: int) -> None:
    """Recompute every hash from rows[index] on, as someone with the database can."""
    prev = rows[index - 1]["hash"] if index else GENESIS
    for row in rows[index:]:
        row["prev_hash"] = prev
        row["hash"] = prev = entry_hash(prev, row)


def test_an_untouched_chain_verifies_and_reports_its_head():
    rows = chain(5)
    result = verify(rows, KEY)
    assert (result.count, result.head_seq, result.head_hash, result.broken) == (
        5,
        5,
        rows[-1]["hash"],
        None,
    )
    assert verify([], KEY).head_hash == GENESIS


def test_an_edited_entry_is_named():
    rows = chain(5)
    rows[2]["actor"] = "mallory"
    result = verify(rows, KEY)
    assert (result.count, result.broken.seq) == (2, 3)
    assert "content" in result.broken.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link():
    rows = chain(5)
    rows[2]["detail"] = {"command": "rollback"}
    rows[2]["hash"] = entry_hash(rows[2]["prev_hash"], rows[2])
    assert verify(rows).broken.seq == 4
    assert verify(rows, KEY).broken.seq == 3  # with the key, already at the edited one


def test_an_edit_with_every_later_hash_recomputed_fails_its_signature():
    rows = chain(5)
    rows[2]["actor"] = "mallory"
    rehash_from(rows, 2)
    assert verify(rows).broken is None  # the chain alone cannot tell
    result = verify(rows, KEY)
    assert result.broken.seq == 3 and "signature" in result.broken.reason


def test_a_forged_row_appended_without_the_key_is_caught():
    rows = chain(5)
    forged = {**rows[-1], "seq": 6, "actor": "mallory", "prev_hash": rows[-1]["hash"]}
    forged["hash"] = entry_hash(forged["prev_hash"], forged)
    for mac in (None, entry_mac(b"a guessed key", forged["hash"])):
        result = verify([*rows, {**forged, "mac": mac}], KEY)
        assert result.broken.seq == 6


def test_entries_from_before_signing_are_counted_not_refused():
    rows = chain(5, first_signed=3)
    result = verify(rows, KEY)
    assert (result.broken, result.unsigned) == (None, 2)


def test_a_deleted_entry_is_named():
    rows = chain(5)
    del rows[1]
    result = verify(rows, KEY)
    assert result.broken.seq == 2
    assert "missing" in result.broken.reason


def test_the_hash_of_a_watched_entry_is_reported():
    rows = chain(5)
    assert verify(rows, KEY, watch={2, 4}).seen == {2: rows[1]["hash"], 4: rows[3]["hash"]}
