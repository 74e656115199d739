"""The protocol's framing: its version, what one message may cost, how output is cut and
batched, the bounds every field is made of, and the WebSocket close codes.

Plain numbers and functions, no validation library: both forms of the messages (the
dashboard's pydantic models in core/protocol.py, the agent's Structs in core/wire.py) and
both processes share them from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1

# --- what one message may cost -------------------------------------------------------------
# Both sides enforce it: `nixfleet serve` gives it to uvicorn (a larger frame is closed with
# 1009 before it is buffered) and the agent's client refuses larger dashboard messages.
MAX_MESSAGE_BYTES = 2**20
# The agent packs output into messages of at most this many bytes of JSON (a quarter of the
# limit: the envelope and a last line always fit) and at most OUTPUT_BATCH_LINES lines.
OUTPUT_BATCH_BYTES = MAX_MESSAGE_BYTES // 2
OUTPUT_BATCH_LINES = 500
# One output line, in characters. JSON needs at most 6 bytes a character (\u001b), so a
# longest line (≤ 384 KiB) still fits next to a full batch; a longer one is cut (cut_line).
LINE_MAX_CHARS = 65536
LINE_CUT_MARK = " … [line cut: longer than {limit} characters]"

# --- the bounds of fields --------------------------------------------------------------------
# Integers fit a signed 64-bit column (or 32-bit where the column is one). Unix seconds lie
# between 1970 and 2100: anything else is a broken clock or an attack.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
TIMESTAMP_MAX = 4_102_444_800
# How many of a profile's generations a status lists (the newest), so the host page can show
# them with their commits without one host's long history growing every heartbeat.
MAX_GENERATIONS = 20

# --- WebSocket close codes (4000-4999 are for applications) ----------------------------------
CLOSE_BAD_TOKEN = 4401
CLOSE_PROTOCOL_TOO_OLD = 4426
CLOSE_BAD_MESSAGE = 4400
CLOSE_REPLACED = 4409
CLOSE_HOST_REMOVED = 4404
# The credential a live connection was opened with stopped being valid; the reason is the code.
CLOSE_TOKEN_REVOKED = 4403
CLOSE_TOKEN_ROTATED = 4410
# Refusals of who the agent is: retrying soon with the same credential cannot help, so the
# agent backs off harder.
AUTH_CLOSE_CODES = frozenset(
    {CLOSE_BAD_TOKEN, CLOSE_HOST_REMOVED, CLOSE_TOKEN_REVOKED, CLOSE_TOKEN_ROTATED}
)

_L = TypeVar("_L")


def cut_line(text: str) -> str:
    """Return text fit to be an output line: NUL replaced, at most LINE_MAX_CHARS, marked if cut."""
    text = text.replace("\x00", "\ufffd")
    if len(text) <= LINE_MAX_CHARS:
        return text
    mark = LINE_CUT_MARK.format(limit=LINE_MAX_CHARS)
    return text[: LINE_MAX_CHARS - len(mark)] + mark


def batch_lines(lines: Iterable[_L], json_size: Callable[[_L], int]) -> Iterator[list[_L]]:
    """Yield the lines in batches of at most OUTPUT_BATCH_LINES lines and about
    OUTPUT_BATCH_BYTES bytes of JSON (json_size: one line's), a batch always holding at
    least one line; a longest line next to a full batch is still below MAX_MESSAGE_BYTES."""
    batch: list[_L] = []
    size = 0
    for line in lines:
        cost = json_size(line) + 1
        if batch and (size + cost > OUTPUT_BATCH_BYTES or len(batch) >= OUTPUT_BATCH_LINES):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += cost
    if batch:
        yield batch
