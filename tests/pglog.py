"""What a dashboard asked PostgreSQL, read from the server's own log.

`watch(cluster, database)` makes the cluster log every statement run in that database,
each line prefixed with the backend's pid and virtual transaction id; `Log.since(offset)`
returns what was logged after an offset as transactions. The counts are PostgreSQL's, so
they include what the driver and the pool send by themselves (BEGIN, ROLLBACK, the
pre-ping `;`), which in-process counters would miss.

The dashboard's own background work (the credential change poll, the expiry sweeps) runs
at the same time; `Work.without(...)` leaves out the transactions that touch those
statements, and the pings drawn for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pgserver

PREFIX = "%m|%p|%d|%v|"
# "… LOG:  statement: BEGIN" (simple protocol) or "… LOG:  execute <unnamed>: SELECT …".
_LINE = re.compile(r"^[^|]*\|(\d+)\|([^|]*)\|([^|]*)\|LOG:  (?:statement|execute [^:]*): (.*)$")
# What a dashboard does by itself every second or so, whatever is asked of it.
BACKGROUND = (
    "change_counters",
    "commands.expires_at IS NOT NULL",
    "commands.disconnected_at IS NOT NULL",
    "replicas",
    "stream_seats",
)
_FRAMING = {"BEGIN", "COMMIT", "ROLLBACK"}


def shape(sql: str) -> str:
    """Return a statement without its literals, to group the same statement together."""
    sql = re.sub(r"'[^']*'", "?", sql)
    sql = re.sub(r"\$\d+|\b\d+(\.\d+)?\b", "?", sql)
    return re.sub(r"\s+", " ", sql)[:160]


@dataclass
class Transaction:
    pid: str
    statements: list[str] = field(default_factory=list)
    pings: int = 0  # the pool's pre-ping (`;`) before it, on the same connection

    def real(self) -> list[str]:
        """Return the statements other than BEGIN/COMMIT/ROLLBACK."""
        return [s for s in self.statements if s not in _FRAMING]


@dataclass
class Work:
    transactions: list[Transaction]

    def without(self, markers: tuple[str, ...] = BACKGROUND) -> Work:
        keep = [
            t for t in self.transactions if not any(m in s for s in t.statements for m in markers)
        ]
        return Work(keep)

    @property
    def count(self) -> int:
        """Return how many transactions."""
        return len(self.transactions)

    @property
    def statements(self) -> int:
        """Return every statement the server ran: BEGIN/COMMIT/ROLLBACK and pings too."""
        return sum(len(t.statements) + t.pings for t in self.transactions)

    def by_statement(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.transactions:
            for s in [*t.statements, *([";"] * t.pings)]:
                counts[shape(s)] = counts.get(shape(s), 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


class Log:
    def __init__(self, cluster: pgserver.Cluster, database: str) -> None:
        self.path = cluster.root / "server.log"
        self.database = database

    def offset(self) -> int:
        return self.path.stat().st_size

    def text(self, offset: int) -> str:
        """Return what was logged after offset, as text."""
        with self.path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def since(self, offset: int, until: int | None = None) -> Work:
        """Return the transactions logged for the database between offset and until."""
        with self.path.open("rb") as f:
            f.seek(offset)
            data = f.read() if until is None else f.read(until - offset)
        open_tx: dict[tuple[str, str], Transaction] = {}
        pings: dict[str, int] = {}
        done: list[Transaction] = []
        for raw in data.decode(errors="replace").splitlines():
            m = _LINE.match(raw)
            if not m or m.group(2) != self.database:
                continue
            pid, vxid, sql = m.group(1), m.group(3), m.group(4).strip()
            if sql in (";", ""):
                pings[pid] = pings.get(pid, 0) + 1
                continue
            key = (pid, vxid)
            tx = open_tx.get(key)
            if tx is None:
                tx = open_tx[key] = Transaction(pid, pings=pings.pop(pid, 0))
                done.append(tx)
            tx.statements.append(sql)
        return Work(done)


def watch(cluster: pgserver.Cluster, database: str) -> Log:
    """Return the log of database, after making the cluster log its every statement."""
    with cluster.admin() as conn:
        conn.execute(f"ALTER SYSTEM SET log_line_prefix = '{PREFIX}'")
        conn.execute(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")
        conn.execute("SELECT pg_reload_conf()")
    return Log(cluster, database)


def settle(log: Log, quiet_s: float = 0.3, timeout: float = 10) -> int:
    """Return the log's size once it has stopped growing for quiet_s (written a bit late)."""
    import time

    deadline = time.monotonic() + timeout
    size, since = log.offset(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = log.offset()
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return size
