"""Where the dashboard replicas sharing one database are stored, each with a lease.

A replica renews its lease every third of the lease time. One whose lease ran out is
dead (killed, frozen, cut off): whichever replica notices first releases its hosts, so
they show offline and their running commands enter the reconnect window.
"""

from __future__ import annotations

import re
import secrets
import socket

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def new_replica_id() -> str:
    """Return a fresh id for this process: the machine's name and a random suffix."""
    name = _UNSAFE.sub("-", socket.gethostname())[:32].strip("-") or "replica"
    return f"{name}-{secrets.token_hex(4)}"
