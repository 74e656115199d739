"""The one reader of `text/event-stream` the tests share, parsing as a browser does."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def sse_frames(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Yield each event of a stream's lines as {"id": int (when sent), "event", "data"}.

    Keep-alive comments and frames without an event name are skipped.
    """
    current: dict[str, Any] = {}
    for line in lines:
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and "event" in current:
            yield current
            current = {}
        elif line == "":
            current = {}
