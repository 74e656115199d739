"""Two replicas, one PostgreSQL: each derives every host's states itself (each reads the
fleet's target), yet a host's timeline holds each change once, not once per replica."""

from __future__ import annotations

from conftest import wait_for
from nixfleet.demo.configrepo import commit_change


def test_a_change_both_replicas_see_is_one_row_of_the_host_s_timeline(pair):
    p = pair(hosts=1, build_seconds=0.5, env={"NIXFLEET_TARGET_CACHE_S": "1"})
    p.start_agent("atlas", p.a.port)
    on_a, on_b = p.login("a"), p.login("b")
    on_a.wait_online(["atlas"])
    done = on_a.wait_state(on_a.command("atlas", "switch"), {"succeeded", "failed"}, 120)
    assert done["state"] == "succeeded", done["detail"]
    deployed = wait_for(
        lambda: (
            on_b.host("atlas")["deploy"]["state"] == "current"
            and on_b.host("atlas")["deploy"]["deployed_commit"]
        ),
        30,
        "current on b",
    )
    # The branch moves: both replicas notice by themselves and both see the host behind.
    commit_change(p.rf.fleet.root / "config", "a newer motd")
    for api in (on_a, on_b):
        wait_for(lambda a=api: a.host("atlas")["deploy"]["state"] == "behind", 30, "behind")

    def timeline(field: str) -> list[str]:
        rows = on_b.get("/api/hosts/atlas/states?limit=100").json()["states"]
        return [
            f"{r['value']} {r['detail'][:7]}".strip() for r in reversed(rows) if r["field"] == field
        ]

    wait_for(lambda: timeline("deploy")[-1:] == [f"behind {deployed[:7]}"], 30, "behind stored")
    assert timeline("deploy") == [
        "never_deployed",
        f"current {deployed[:7]}",
        f"behind {deployed[:7]}",
    ]
    assert timeline("connection") == ["online"]
    assert timeline("reboot") == ["not needed"]
