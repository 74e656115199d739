"""How long the fleet page takes to take in one heartbeat round, in headless Chromium.

`python -m bench.ui_render` (repository root, in the venv; about a minute):

1. Start a real dashboard (the demo's `prepare` / `start_dashboard`) and log in.
2. Before the page's scripts run, replace `EventSource` with a stand-in the benchmark
   drives, so the page gets exactly the events it would get from `/api/events`, as fast
   as the benchmark sends them (the server is not what is measured here).
3. Send a snapshot of N hosts, then rounds of N `host` events, each host with a new load,
   memory and last-seen time (what a heartbeat changes), and measure per round the time
   the page's main thread is busy: handling the N events, plus the frame that redraws
   (the table's flush and the forced style and layout). Two figures: the main thread's
   CPU time (Chromium's ThreadTime metric; what other processes on a busy machine cannot
   inflate) and the wall-clock time of the same work. Waiting for the next frame is in
   neither.

Writes bench/results/ui_render.json and prints a table. Sizes: 500 and 5,000 hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import CDPSession, Page, sync_playwright

from bench.stats import machine, percentile
from nixfleet.demo.run import prepare, start_dashboard

CHROMIUM = "/usr/bin/chromium"
RESULTS = Path(__file__).parent / "results"

PAGE_SIDE = Path(__file__).with_suffix(".js")


def thread_ms(cdp: CDPSession) -> float:
    """Return the CPU time the page's main thread has used so far, in milliseconds."""
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "ThreadTime") * 1000


def measure(page: Page, n: int, rounds: int) -> dict[str, Any]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
    page.evaluate("(n) => window.__bench.snapshot(n)", n)
    page.wait_for_function(f"() => document.querySelector('#count-total').textContent === '{n}'")
    samples: list[dict[str, float]] = []
    next_id = 1001
    for r in range(1, rounds + 1):
        page.evaluate("(a) => window.__bench.prepare(...a)", [n, r, next_id])
        next_id += n
        time.sleep(0.05)
        cpu0 = thread_ms(cdp)
        sample = page.evaluate("() => window.__bench.round()")
        sample["cpu_ms"] = thread_ms(cdp) - cpu0
        samples.append(sample)
    rows = page.locator("#hosts tr.host").count()
    warm = samples[2:]  # the first rounds warm the JIT up

    def p(key: str) -> dict[str, float]:
        values = [s[key] for s in warm]
        return {
            "p50": round(percentile(values, 50), 1),
            "p95": round(percentile(values, 95), 1),
            "max": round(max(values), 1),
        }

    return {
        "hosts": n,
        "rounds": len(warm),
        "rows_in_dom": rows,
        "cpu_ms": p("cpu_ms"),
        "busy_ms": p("busy_ms"),
        "events_ms_p50": p("events_ms")["p50"],
        "frame_ms_p50": p("frame_ms")["p50"],
    }


def run(sizes: list[int], rounds: int) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="nixfleet-ui-bench-") as tmp:
        fleet = prepare(Path(tmp) / "fleet", 1, failing=())
        server, port = start_dashboard(fleet, 0)
        base = f"http://127.0.0.1:{port}"
        results: list[dict[str, Any]] = []
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
                )
                for n in sizes:
                    context = browser.new_context(viewport={"width": 1400, "height": 900})
                    context.add_init_script(path=str(PAGE_SIDE))
                    page = context.new_page()
                    page.goto(f"{base}/login")
                    page.fill("input[name=username]", "admin")
                    page.fill("input[name=password]", fleet.password)
                    page.click("button[type=submit]")
                    page.wait_for_url(f"{base}/")
                    results.append(measure(page, n, rounds))
                    context.close()
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
    return {
        "benchmark": "ui_render",
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "run": secrets.token_hex(4),
        "machine": machine(),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,5000", help="host counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=22, help="heartbeat rounds per size")
    args = parser.parse_args()
    out = run([int(s) for s in args.sizes.split(",") if s], args.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ui_render.json").write_text(json.dumps(out, indent=2))
    print("hosts  main-thread CPU p50 / p95 / max (ms)  wall p50 / p95 (ms)  rows in DOM")
    for r in out["results"]:
        c, w = r["cpu_ms"], r["busy_ms"]
        print(
            f"{r['hosts']:>5}  {c['p50']:>8} / {c['p95']:>6} / {c['max']:>6}"
            f"               {w['p50']:>6} / {w['p95']:>6}        {r['rows_in_dom']:>4}"
        )
    print(f"load average before / after: {out['load_before']} / {out['load_after']}")


if __name__ == "__main__":
    main()
