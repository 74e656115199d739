"""How long the fleet page takes to take in one heartbeat round, in headless Chromium.

`python -m bench.ui_render` (repository root, in the venv; about a minute):

1. Start a real dashboard (the demo's `prepare` / `start_dashboard`) and log in.
2. Before the page's scripts run, replace `EventSource` with a stand-in the benchmark
   drives, so the page gets exactly the events it would get from `/api/events`, as fast
   as the benchmark sends them (the server is not what is measured here).
3. Send a snapshot of N hosts, then rounds of N `host` events, each host with a new load,
   memory and last-seen time (what a heartbeat changes), and measure per round the time
   the page's main thread is busy: handling the N events, plus the frame that redraws
   (the table's flush and the forced style and layout). Idle time waiting for the next
   frame is not counted.

Writes bench/results/ui_render.json and prints a table. Sizes: 500 and 5,000 hosts.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from bench.stats import machine, percentile
from nixfleet.demo.run import prepare, start_dashboard

CHROMIUM = "/usr/bin/chromium"
RESULTS = Path(__file__).parent / "results"

PAGE_SIDE = Path(__file__).with_suffix(".js")


def measure(page: Page, n: int, rounds: int) -> dict[str, Any]:
    page.evaluate("(n) => window.__bench.snapshot(n)", n)
    page.wait_for_function(f"() => document.querySelector('#count-total').textContent === '{n}'")
    samples: list[dict[str, float]] = []
    next_id = 1001
    for r in range(1, rounds + 1):
        samples.append(page.evaluate("(a) => window.__bench.round(...a)", [n, r, next_id]))
        next_id += n
        time.sleep(0.05)
    rows = page.locator("#hosts tr.host").count()
    warm = samples[2:]  # the first rounds warm the JIT up
    busy = [s["busy_ms"] for s in warm]
    return {
        "hosts": n,
        "rounds": len(busy),
        "rows_in_dom": rows,
        "busy_ms": {
            "p50": round(percentile(busy, 50), 1),
            "p95": round(percentile(busy, 95), 1),
            "max": round(max(busy), 1),
        },
        "events_ms_p50": round(percentile([s["events_ms"] for s in warm], 50), 1),
        "frame_ms_p50": round(percentile([s["frame_ms"] for s in warm], 50), 1),
    }


def run(sizes: list[int], rounds: int) -> dict[str, Any]:
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
    print("hosts  rounds  rows in DOM  busy p50  p95   max (ms)  events p50  frame p50")
    for r in out["results"]:
        b = r["busy_ms"]
        print(
            f"{r['hosts']:>5}  {r['rounds']:>6}  {r['rows_in_dom']:>11}  {b['p50']:>8}  "
            f"{b['p95']:>4}  {b['max']:>5}     {r['events_ms_p50']:>10}  {r['frame_ms_p50']:>9}"
        )


if __name__ == "__main__":
    main()
