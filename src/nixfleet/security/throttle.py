"""Login throttling: after a few free failures each further one doubles the wait.

Pure logic over an injectable clock. Keys are opaque strings ("ip:…", "user:…"); the
caller checks the keys a login attempt touches and records failures on all of them.

Throttle the attacker, not the account holder (OWASP, "Authentication Cheat Sheet",
account lockout): an account under attack from anywhere is throttled for unknown
browsers and addresses, but a browser or address this account already logged in from
(`known`) is checked against its own address only, so a guessing run elsewhere cannot
keep the admin out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_KNOWN_PER_ACCOUNT = 32


@dataclass
class _Record:
    failures: int
    last: float


class LoginThrottle:
    """Growing delays per key, in memory, bounded to max_keys entries."""

    def __init__(
        self,
        free_failures: int = 5,
        base_delay_s: float = 1.0,
        max_delay_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.free, self.base, self.cap = free_failures, base_delay_s, max_delay_s
        self.clock, self.max_keys = clock, max_keys
        self._records: dict[str, _Record] = {}
        self._known: dict[str, OrderedDict[str, None]] = {}

    def delay_after(self, failures: int) -> float:
        """Return how long a key must wait after this many consecutive failures."""
        extra = failures - self.free
        if extra < 0:
            return 0.0
        return float(min(self.cap, self.base * 2 ** min(extra, 64)))

    def retry_after(self, key: str) -> float:
        """Return the seconds key must still wait before its next attempt (0: go ahead)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.last + self.delay_after(record.failures) - self.clock())

    def failed(self, key: str) -> None:
        """Count one more failure for key."""
        now = self.clock()
        record = self._records.get(key)
        if record is None:
            self._forget_stale(now)
            self._records[key] = _Record(1, now)
        else:
            record.failures += 1
            record.last = now

    def succeeded(self, key: str) -> None:
        """Forget key's failures (a correct login starts afresh)."""
        self._records.pop(key, None)

    def remember(self, account: str, address: str) -> None:
        """Note that account logged in from address (the newest few per account)."""
        known = self._known.setdefault(account, OrderedDict())
        known[address] = None
        known.move_to_end(address)
        while len(known) > _KNOWN_PER_ACCOUNT:
            known.popitem(last=False)
        if len(self._known) > self.max_keys:
            del self._known[next(iter(self._known))]

    def known(self, account: str, address: str) -> bool:
        """Return whether account logged in from address before (in this process)."""
        return address in self._known.get(account, ())

    def _forget_stale(self, now: float) -> None:
        """Drop records whose wait has run out for a full max delay, when the store is full.

        An attacker spraying addresses fills memory at most to max_keys; when it is full
        of live records the oldest one goes first.
        """
        if len(self._records) < self.max_keys:
            return
        stale = [k for k, r in self._records.items() if now - r.last > 2 * self.cap]
        for key in stale:
            del self._records[key]
        while len(self._records) >= self.max_keys:
            del self._records[next(iter(self._records))]
