"""What one command costs PostgreSQL: `python -m bench.statements`.

Run from the repository root:  python -m bench.statements --commands 5

1. A throwaway cluster (tests/pgserver.py) logs every statement run in the fleet's
   database (tests/pglog.py: each line names the backend and its virtual transaction).
2. One demo dashboard on that database and one real agent; heartbeats every 10 minutes
   and a 10-minute replica lease, so neither falls into the count.
3. Per `test` command, one at a time: the POST up to its 202, and the rest of its life
   (claim and dispatch to the agent, started, output, finished). Transactions of the
   dashboard's own background work (credential change poll, expiry sweeps) are left out;
   so are the status polls (GET /api/commands/{id}) the probe itself makes to see the
   end, which run after the command has finished.

The figures are counts, not times: the machine's load does not change them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pglog
import pgserver

_OUTPUT = "INSERT INTO output"
_LAST_WRITE = "UPDATE hosts SET last_test="


def _phase(work: Any) -> dict[str, Any]:
    work = work.without()
    stored = [t for t in work.transactions if any(_OUTPUT in s for s in t.statements)]
    return {
        "statements": work.statements,
        "transactions": work.count,
        # Output lines are stored a batch at a time, as the agent sends them; how many
        # batches depends on timing, so they are counted apart.
        "output_batches": len(stored),
        "output_inserts": sum(s.startswith(_OUTPUT) for t in stored for s in t.statements),
        "by_statement": work.by_statement(),
        "each": [[pglog.shape(s)[:90] for s in t.real()] for t in work.transactions],
    }


class Probe:
    """A dashboard and one agent on a logged PostgreSQL database (of cluster, if given;
    else of a throwaway cluster of its own)."""

    def __init__(self, root: Path, cluster: pgserver.Cluster | None = None) -> None:
        from nixfleet.demo.run import prepare

        self.own_cluster = cluster is None
        if cluster is None:
            bindir = pgserver.find_bindir()
            if bindir is None:
                raise SystemExit("bench: no PostgreSQL installed")
            cluster = pgserver.create(bindir)
        self.cluster = cluster
        self.database = self.cluster.create_database()
        self.log = pglog.watch(self.cluster, self.database)
        env = {
            "NIXFLEET_DATABASE_URL": self.cluster.url(self.database),
            "NIXFLEET_HEARTBEAT_S": "600",
            "NIXFLEET_REPLICA_LEASE_S": "600",
        }
        self.fleet = prepare(root, 1, failing=(), extra_env=env)
        self.server: Any = None
        self.agent: Any = None

    def start(self) -> None:
        from nixfleet.demo.run import start_agent, start_dashboard

        self.server, port = start_dashboard(self.fleet, 0)
        self.agent = start_agent(self.fleet, self.fleet.hosts[0], port, 0.2)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        res = self.http.post("/login", data={"username": "admin", "password": self.fleet.password})
        assert res.status_code == 303, res.text
        page = self.http.get("/").text
        self.csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
        self.host = self.fleet.hosts[0].host_id
        self._wait(lambda: self.http.get("/api/hosts").json()["hosts"][0]["online"], "online")

    def _wait(self, ok: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: timed out waiting for {what}")
            time.sleep(0.05)

    def command(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (the POST's phase, the rest of its life's phase) for one `test` command."""
        start = pglog.settle(self.log)
        res = self.http.post(
            f"/api/hosts/{self.host}/command",
            json={"command": "test"},
            headers={"X-CSRF-Token": self.csrf},
        )
        assert res.status_code == 202, res.text
        cid = res.json()["command_id"]
        posted = self.log.offset()
        # Its end is read from the server's log (a test's last write is the host's test
        # summary), not asked of the dashboard, whose answers would fall into the count.
        self._wait(lambda: _LAST_WRITE in self.log.text(posted), f"command {cid} to end")
        ended = pglog.settle(self.log)
        state = self.http.get(f"/api/commands/{cid}").json()["state"]
        if state != "succeeded":
            raise SystemExit(f"bench: command {cid} ended {state}")
        return _phase(self.log.since(start, posted)), _phase(self.log.since(posted, ended))

    def stop(self) -> None:
        for proc in (self.agent, self.server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        if self.own_cluster:
            pgserver.destroy(self.cluster)
        else:
            self.cluster.drop_database(self.database)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.statements", description=__doc__)
    parser.add_argument("--commands", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the full result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nixfleet-bench-statements-") as tmp:
        probe = Probe(Path(tmp))
        try:
            probe.start()
            probe.command()  # the first one warms up (first reads, prepared statements)
            runs = [probe.command() for _ in range(args.commands)]
        finally:
            probe.stop()
    result = {"post": [p for p, _ in runs], "life": [lf for _, lf in runs]}
    for name in ("post", "life"):
        counts = [(r["statements"], r["transactions"]) for r in result[name]]
        print(f"{name}: (statements, transactions) per command: {counts}")
    for name, title in (("post", "one POST"), ("life", "the rest of its life")):
        print(f"{title}, by statement:")
        for sql, n in result[name][-1]["by_statement"].items():
            print(f"  {n:3d}  {sql}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
