"""The agent's own limit on how many commands it starts: a token bucket.

The dashboard is trusted, but a runaway script or a stolen session must not turn a host
into a build loop. The bucket is kept in STATE_DIR, so restarting the agent (which the
dashboard can ask for) does not refill it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from nixfleet.core.errors import ConfigError

_RATE = re.compile(r"^(\d+)/(\d+(?:\.\d+)?)$")


def parse_rate(text: str) -> tuple[int, float]:
    """Return (commands, seconds) from "N/SECONDS", or raise ConfigError."""
    match = _RATE.match(text.strip())
    if match is None or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
        raise ConfigError(f"agent: command rate {text!r} is not N/SECONDS, e.g. 6/600")
    return int(match.group(1)), float(match.group(2))


class TokenBucket:
    """Hold up to `capacity` starts, refilled evenly over `period` seconds."""

    def __init__(
        self,
        capacity: int,
        period: float,
        path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.capacity, self.period, self.path, self.clock = capacity, period, path, clock
        self.tokens, self.updated = float(capacity), clock()
        self._load()

    def take(self) -> bool:
        """Return True and use one token if one is left, else False."""
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        self._save()
        return True

    def retry_after(self) -> float:
        """Return the seconds until the next token."""
        self._refill()
        return max(0.0, (1 - self.tokens) * self.period / self.capacity)

    def _refill(self) -> None:
        now = self.clock()
        # A clock stepped backwards must not mint tokens, nor leave the bucket stuck.
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.capacity / self.period)
        self.updated = now

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            saved = json.loads(self.path.read_text())
            self.tokens = min(float(self.capacity), float(saved["tokens"]))
            self.updated = min(self.clock(), float(saved["updated"]))
        except (ValueError, KeyError, TypeError):
            return  # a damaged file: start full rather than refuse to run

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tokens": self.tokens, "updated": self.updated}))
        tmp.replace(self.path)
