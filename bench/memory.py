"""Memory at import: resident set, peak and a breakdown per imported package.

Run from the repository root:  python -m bench.memory [--top 15] [module ...]

Each module (default: the dashboard app and the agent daemon) is imported in a fresh
interpreter twice: once plain, for VmRSS / VmHWM from /proc/self/status (what a user sees),
once under tracemalloc, for the Python-heap bytes still held after import, grouped by the
top-level package (``nixfleet.<wing>`` for our own code) of the file that allocated them.
Load-independent: neither figure depends on how busy the machine is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

DEFAULT = ("nixfleet.dashboard.app", "nixfleet.agent.daemon")

_PLAIN = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
status = dict(l.split(':', 1) for l in open('/proc/self/status'))
kib = lambda k: int(status[k].split()[0])
print(json.dumps({'rss_kib': kib('VmRSS'), 'peak_kib': kib('VmHWM'), 'modules': len(sys.modules)}))
"""

_TRACED = """
import importlib, json, sys, tracemalloc
tracemalloc.start()
importlib.import_module(sys.argv[1])
snap = tracemalloc.take_snapshot()
out = {}
for stat in snap.statistics('filename'):
    name = stat.traceback[0].filename
    if 'site-packages/' in name:
        parts = name.split('site-packages/', 1)[1].split('/')
        key = parts[0].removesuffix('.py')
        if key == 'nixfleet' and len(parts) > 2:
            key = 'nixfleet.' + parts[1].removesuffix('.py')
    elif '/src/nixfleet/' in name:
        parts = name.split('/src/nixfleet/', 1)[1].split('/')
        key = 'nixfleet.' + parts[0].removesuffix('.py')
    elif name.startswith('<frozen'):
        key = '(import machinery)'
    else:
        key = '(stdlib)'
    out[key] = out.get(key, 0) + stat.size
print(json.dumps(out))
"""


def measure(module: str) -> dict[str, object]:
    """Return RSS, peak, module count and the traced heap per package for one import."""
    plain = subprocess.run(
        [sys.executable, "-c", _PLAIN, module], capture_output=True, text=True, check=True
    )
    traced = subprocess.run(
        [sys.executable, "-c", _TRACED, module], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(plain.stdout)
    result["heap_by_package"] = json.loads(traced.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("modules", nargs="*", default=list(DEFAULT))
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args()
    results = {m: measure(m) for m in args.modules}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for module, res in results.items():
        heap: dict[str, int] = res["heap_by_package"]  # type: ignore[assignment]
        print(
            f"## {module}: RSS {res['rss_kib'] / 1024:.1f} MiB, "
            f"peak {res['peak_kib'] / 1024:.1f} MiB, {res['modules']} modules, "
            f"traced heap {sum(heap.values()) / 1048576:.1f} MiB"
        )
        for key, size in sorted(heap.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"| {key} | {size / 1024:.0f} KiB |")


if __name__ == "__main__":
    main()
