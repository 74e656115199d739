"""`python -m bench.mallocprobe OUT ARGS…`: run `nixfleet ARGS…`; each SIGUSR1 trims the heap.

bench/trim.py starts the dashboard through this. Each SIGUSR1 appends one JSON line to OUT:
the process's RSS and glibc's own account (`mallinfo2`: bytes in use, bytes free but kept,
how many arenas' worth) before and after `malloc_trim(0)`, so what the allocator keeps and
what trimming gives back are read from the same process, seconds apart. The handler runs
between two bytecodes of the main thread, as a periodic trim in the event loop would.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

# Not bench.target's: that imports httpx and half the dashboard into the process it measures.
PAGE = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def _sqlite() -> ctypes.CDLL | None:
    """Return the SQLite library Python's sqlite3 module is linked to (the same, loaded once)."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_status64.argtypes = [
            ctypes.c_int,
            *[ctypes.POINTER(ctypes.c_int64)] * 2,
            ctypes.c_int,
        ]
    except (OSError, AttributeError):
        return None
    return lib


def _sqlite_heap(lib: ctypes.CDLL | None) -> int:
    """Return the bytes SQLite has allocated in this process, every connection's caches too."""
    if lib is None:
        return -1
    now, peak = ctypes.c_int64(), ctypes.c_int64()
    lib.sqlite3_status64(0, ctypes.byref(now), ctypes.byref(peak), 0)  # SQLITE_STATUS_MEMORY_USED
    return now.value


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def _account(libc: ctypes.CDLL) -> dict[str, int]:
    info = libc.mallinfo2()
    return {
        "sqlite_heap": _sqlite_heap(_sqlite()),
        "rss": _rss(),
        "threads": len(os.listdir("/proc/self/task")),
        "heap": info.arena,  # sbrk'd and arena heaps, in use or free
        "mmapped": info.hblkhd,  # large blocks, each its own mmap
        "in_use": info.uordblks,
        "free_kept": info.fordblks,
        **{f"pymalloc_{k}": v for k, v in _pymalloc().items()},
    }


def _pymalloc() -> dict[str, int]:
    """Return pymalloc's own account: arenas held, bytes in live blocks, bytes free in them.

    `sys._debugmallocstats()` writes to the C stderr only, so fd 2 is pointed at a file
    for the call.
    """
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    want = {
        "# arenas allocated current": "arenas",
        "# bytes in allocated blocks": "blocks",
        "# bytes in available blocks": "free_in_pools",
        "unused pools": "unused_pools",
    }
    out = dict.fromkeys(want.values(), 0)
    for line in text.splitlines():
        for key, name in want.items():
            if line.startswith(key) or (key == "unused pools" and key in line):
                out[name] = int(line.rsplit("=", 1)[1].replace(",", ""))
    return out


def _cap_sqlite_cache(kib: int) -> None:
    """Give each SQLite connection the dashboard opens a page cache of kib (what-if only)."""
    from nixfleet.storage import db

    pragmas = db._sqlite_pragmas

    def capped(dbapi_conn: Any, record: Any, **kw: Any) -> None:
        pragmas(dbapi_conn, record, **kw)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA cache_size=-{kib}")
        cur.close()

    db._sqlite_pragmas = capped  # type: ignore[assignment]


class _Statements:
    """What the dashboard's SQLite connections have run: distinct statement texts, and how
    many connections were opened and are open now (what SQLite's heap grows with)."""

    SIZES = (8, 16, 24, 32, 48, 64, 128)

    def __init__(self) -> None:
        self.texts: set[str] = set()
        self.opened = 0
        self.open = 0
        self.runs = 0
        # Per connection and cache size, an LRU of statement texts as Python's sqlite3 keeps
        # one: how often a statement would be prepared again with `cached_statements` = size.
        self.lrus: dict[tuple[int, int], OrderedDict[str, None]] = {}
        self.misses = dict.fromkeys(self.SIZES, 0)

    def _note(self, conn: object, operation: str) -> None:
        self.texts.add(operation)
        self.runs += 1
        for size in self.SIZES:
            lru = self.lrus.setdefault((id(conn), size), OrderedDict())
            if operation in lru:
                lru.move_to_end(operation)
                continue
            self.misses[size] += 1
            lru[operation] = None
            if len(lru) > size:
                lru.popitem(last=False)

    def watch(self, cached: int | None) -> None:
        """Count from now on; with cached, open each connection with that many statements
        cached (Python's `cached_statements`; a what-if)."""
        from nixfleet.storage import sqlite_adapter as sa

        seen, run, connect = self, sa.OneTripCursor._trip, sa.OneTripDBAPI.connect
        close = sa.OneTripConnection.close

        async def trip(cursor: Any, operation: str, *args: Any) -> None:
            seen._note(cursor._adapt_connection, operation)
            await run(cursor, operation, *args)

        def opening(dbapi: Any, *arg: Any, **kw: Any) -> Any:
            seen.opened, seen.open = seen.opened + 1, seen.open + 1
            return connect(dbapi, *arg, **({"cached_statements": cached} if cached else {}), **kw)

        def closing(conn: Any) -> None:
            seen.open -= 1
            for size in seen.SIZES:  # a new connection may get the same id: a cold cache
                seen.lrus.pop((id(conn), size), None)
            close(conn)

        sa.OneTripCursor._trip = trip  # type: ignore[method-assign]
        sa.OneTripDBAPI.connect = opening  # type: ignore[method-assign]
        sa.OneTripConnection.close = closing  # type: ignore[method-assign]

    def account(self) -> dict[str, int]:
        return {
            "sqlite_statements": len(self.texts),
            "sqlite_statements_kib": sum(len(t) for t in self.texts) // 1024,
            "sqlite_connections_opened": self.opened,
            "sqlite_connections_open": self.open,
            "sqlite_runs": self.runs,
            "sqlite_prepares_by_cache_size": dict(self.misses),
        }


def main() -> None:
    out = Path(sys.argv[1])
    statements = _Statements()
    libc = _libc()

    def trim(*_: object) -> None:
        before = _account(libc)
        started = time.perf_counter()
        released = libc.malloc_trim(0)
        ms = (time.perf_counter() - started) * 1000
        record: dict[str, Any] = {"before": before, "after": _account(libc)}
        record |= statements.account()
        record |= {"trim_ms": round(ms, 2), "released": released}
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")

    signal.signal(signal.SIGUSR1, trim)
    cache_kib = os.environ.get("BENCH_SQLITE_CACHE_KIB")
    if cache_kib:
        _cap_sqlite_cache(int(cache_kib))
    cached = os.environ.get("BENCH_SQLITE_CACHED_STATEMENTS")
    statements.watch(int(cached) if cached else None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.argv = ["nixfleet", *sys.argv[2:]]
    from nixfleet.cli.main import main as nixfleet

    nixfleet()


if __name__ == "__main__":
    main()
