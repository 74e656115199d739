"""What one command costs PostgreSQL, as a regression guard.

A budget, not a target: one `test` command on PostgreSQL, counted by the server itself
(bench/statements.py, tests/pglog.py; every statement, BEGIN/COMMIT and the pool's pings
included). Measured on 2026-12-03: the POST up to its 202 took 25–31 statements and the
rest of the command's life (dispatch, started, finished, announcements) 39–46 besides its
output (which is stored a batch at a time, as the agent sends lines); before that day's
cuts the same counts were 55 and about 95–110. The budgets below sit between the two, so
a lost cut (a read per request back in a transaction of its own, a re-read after every
write) fails here, while the run-to-run spread of a claim round does not.
"""

from __future__ import annotations

import pytest
from bench.statements import Probe

POST_BUDGET = 40
LIFE_BUDGET = 60  # besides the output, for one output batch
PER_EXTRA_OUTPUT_BATCH = 10


@pytest.mark.timeout(300)
def test_one_command_stays_within_its_statement_budget_on_postgresql(pg_cluster, tmp_path):
    probe = Probe(tmp_path, pg_cluster)
    try:
        probe.start()
        probe.command()  # the first one warms up (first reads, prepared statements)
        post, life = probe.command()  # and ends succeeded, or this raises
        audit = probe.http.get("/api/audit").json()
    finally:
        probe.stop()
    assert post["statements"] <= POST_BUDGET, post["by_statement"]
    assert life["output_batches"] >= 1, "the command's output was stored"
    budget = LIFE_BUDGET + PER_EXTRA_OUTPUT_BATCH * (life["output_batches"] - 1)
    assert life["statements"] - life["output_inserts"] <= budget, life["by_statement"]
    # The cuts kept every guarantee the POST gives: each command has its audit entry.
    accepted = [e for e in audit["entries"] if e["action"] == "command"]
    assert len(accepted) == 2 and all(e["result"] == "accepted" for e in accepted)
