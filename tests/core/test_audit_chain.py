"""The audit chain: every edit, deletion or reordering breaks it at the right entry."""

from __future__ import annotations

from nixfleet.core.audit import GENESIS, entry_hash, verify


def chain(n: int) -> list[dict]:
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
        rows.append(row)
    return rows


def test_an_untouched_chain_verifies_and_reports_its_head():
    rows = chain(5)
    assert verify(rows) == (5, rows[-1]["hash"], None)
    assert verify([]) == (0, GENESIS, None)


def test_an_edited_entry_is_named():
    rows = chain(5)
    rows[2]["actor"] = "mallory"
    count, _, broken = verify(rows)
    assert (count, broken.seq) == (2, 3)
    assert "content" in broken.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link():
    rows = chain(5)
    rows[2]["detail"] = {"command": "rollback"}
    rows[2]["hash"] = entry_hash(rows[2]["prev_hash"], rows[2])
    assert verify(rows)[2].seq == 4


def test_a_deleted_entry_is_named():
    rows = chain(5)
    del rows[1]
    _, _, broken = verify(rows)
    assert broken.seq == 2
    assert "missing" in broken.reason
