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


def main() -> None:
    out = Path(sys.argv[1])
    libc = _libc()

    def trim(*_: object) -> None:
        before = _account(libc)
        started = time.perf_counter()
        released = libc.malloc_trim(0)
        ms = (time.perf_counter() - started) * 1000
        record: dict[str, Any] = {"before": before, "after": _account(libc)}
        record |= {"trim_ms": round(ms, 2), "released": released}
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")

    signal.signal(signal.SIGUSR1, trim)
    cache_kib = os.environ.get("BENCH_SQLITE_CACHE_KIB")
    if cache_kib:
        _cap_sqlite_cache(int(cache_kib))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.argv = ["nixfleet", *sys.argv[2:]]
    from nixfleet.cli.main import main as nixfleet

    nixfleet()


if __name__ == "__main__":
    main()
