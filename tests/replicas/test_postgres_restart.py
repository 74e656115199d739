"""PostgreSQL restarted under two replicas while a build streams through them: the replicas
reconnect by themselves, and no line of output and no event is lost on the way."""

from __future__ import annotations

import time

from conftest import wait_for
from replicas.replicaset import Pair


def _restart(pg_cluster, down_s: float) -> None:
    pg_cluster.stop()
    time.sleep(down_s)
    pg_cluster.start()


def test_a_build_streams_whole_through_a_postgresql_restart(pair, pg_cluster):
    p: Pair = pair(hosts=2, build_seconds=8)
    p.start_agent("atlas", p.b.port)
    on_a = p.login("a")
    on_a.wait_online(["atlas"])
    connected_at = on_a.host("atlas")["connected_at"]
    browser_on_a = p.stream(on_a)
    cid = on_a.command("atlas", "switch")
    on_a.wait_state(cid, {"running"}, 30)
    _restart(pg_cluster, 3)  # the agent on b keeps sending its output meanwhile

    done = on_a.wait_state(cid, {"succeeded", "failed"}, 90)
    assert done["state"] == "succeeded"
    stored = {ln["seq"]: ln["text"] for ln in done["output"]}
    assert sorted(stored) == list(range(1, len(stored) + 1)) and len(stored) > 3
    # Written on b, announced through PostgreSQL, read by a after its listener came back.
    wait_for(lambda: browser_on_a.output(cid) == stored, 20, "every line on a's browser")
    assert on_a.host("atlas")["connected_at"] == connected_at  # the link held throughout
    # Both replicas serve again: the session made before the restart acts on b.
    on_b = p.acting_on(on_a, "b")
    again = on_b.command("atlas", "test")
    assert on_a.wait_state(again, {"succeeded", "failed"}, 60)["state"] == "succeeded"
    for replica in (p.a, p.b):
        text = replica.log.read_text(errors="replace")
        assert "Traceback" not in text, f"replica {replica.name} logged a traceback"
