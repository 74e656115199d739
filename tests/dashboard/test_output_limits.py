"""What one command's output may cost, and that all of it arrives: long lines in a burst
or after an outage, a quota with one clear marker, paging to the end, a final record
that its host cannot rewrite, and no command stuck when agent and dashboard die together."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import RunningFleet, wait_for
from rawagent import connect, db_rows, messages_until

FINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


def install_build(rf: RunningFleet, body: str) -> None:
    """Replace the fleet's nixos-rebuild with a Python build printing what body prints."""
    build = rf.fleet.root / "bin" / "nixos-rebuild"
    build.write_text("#!/usr/bin/env python3\nimport os, sys, time\n" + body)
    build.chmod(0o755)


def all_output(api, cid: str) -> list[dict]:
    """Return every stored line of a command, following the output API's cursor."""
    first = api.get(f"/api/commands/{cid}").json()
    lines, after = list(first["output"]), first["output_next"]
    while after is not None:
        page = api.get(f"/api/commands/{cid}/output?after_seq={after}&limit=5000").json()
        lines += page["lines"]
        after = page["next"]
    return lines


def contiguous(lines: list[dict]) -> bool:
    return [ln["seq"] for ln in lines] == list(range(1, len(lines) + 1))


LONG_BURST = """
for i in range(500):
    print(f"{i:05d} " + "n" * 3000)
print("x" * 200_000)
sys.stdout.flush()
"""


def test_500_long_lines_in_a_burst_all_arrive_and_an_over_long_line_is_cut(make_fleet):
    rf = make_fleet(hosts=1)
    install_build(rf, LONG_BURST)
    api = rf.api()
    cmd = api.wait_state(api.command("atlas", "switch"), FINAL, timeout=60)
    assert cmd["state"] == "succeeded", cmd["detail"]
    lines = all_output(api, cmd["id"])
    assert contiguous(lines)
    printed = [ln["text"] for ln in lines if ln["stream"] == "stdout"]
    assert len(printed) == 501
    assert all(t.startswith(f"{i:05d} n") and len(t) == 3006 for i, t in enumerate(printed[:500]))
    cut = printed[500]
    assert cut.startswith("xxx") and "line cut" in cut and len(cut) <= 65536


def test_long_lines_printed_during_a_dashboard_outage_arrive_after_it(make_fleet):
    rf = make_fleet(hosts=1)
    go = rf.fleet.root / "go"
    install_build(
        rf,
        f"print('waiting', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.05)\n" + LONG_BURST,
    )
    api = rf.api()
    cid = api.command("atlas", "switch")
    api.wait_state(cid, {"running"})
    rf.kill_dashboard()
    go.touch()
    journal = rf.host("atlas").root / "state" / "journal" / cid
    wait_for(lambda: (journal / "exit.json").exists(), 60, "the build to end unobserved")
    rf.start_dashboard()
    api = rf.api()
    cmd = api.wait_state(cid, FINAL, timeout=60)
    assert cmd["state"] == "succeeded", cmd["detail"]
    lines = all_output(api, cid)
    assert contiguous(lines)
    assert sum(1 for ln in lines if ln["stream"] == "stdout") == 502  # "waiting" + 501


def test_output_past_the_quota_gets_one_marker_and_the_true_result(make_fleet):
    rf = make_fleet(hosts=2, env={"NIXFLEET_OUTPUT_MAX_BYTES": "100000"})
    install_build(
        rf,
        "for i in range(2000):\n    print(f'{i:05d} ' + 'q' * 1000)\nsys.exit(3)\n",
    )
    api = rf.api()
    atlas = api.command("atlas", "switch")
    borealis = api.command("borealis", "pull")
    cmd = api.wait_state(atlas, FINAL, timeout=90)
    assert (cmd["state"], cmd["exit_code"]) == ("failed", 3)
    assert cmd["output_truncated"] is True
    lines = all_output(api, atlas)
    assert contiguous(lines)
    assert lines[-1]["stream"] == "system"
    assert "output truncated" in lines[-1]["text"] and "100000 bytes" in lines[-1]["text"]
    stored = db_rows(
        rf.fleet.root, "SELECT sum(length(text)) FROM output WHERE command_id = ?", atlas
    )[0][0]
    assert 99_000 < stored < 100_000 + 200
    # The other host's command and output are whole.
    other = api.wait_state(borealis, FINAL, timeout=60)
    assert other["state"] == "succeeded"
    assert not other["output_truncated"] and contiguous(all_output(api, borealis))


def test_long_output_pages_to_the_end_with_no_silent_cut(make_fleet):
    rf = make_fleet(hosts=1)
    install_build(rf, "for i in range(12_000):\n    print(f'line {i}')\n")
    api = rf.api()
    cmd = api.wait_state(api.command("atlas", "switch"), FINAL, timeout=90)
    assert cmd["state"] == "succeeded"
    assert len(cmd["output"]) == 5000 and cmd["output_next"] == 5000
    lines = all_output(api, cmd["id"])
    assert contiguous(lines)
    assert [ln["text"] for ln in lines if ln["stream"] == "stdout"][-1] == "line 11999"
    page = api.get(f"/api/commands/{cmd['id']}/output?after_seq={len(lines) - 2}").json()
    assert (len(page["lines"]), page["next"]) == (2, None)
    for bad in ("after_seq=-1", "limit=0", "limit=1000000", "after_seq=99999999999"):
        res = api.get(f"/api/commands/{cmd['id']}/output?{bad}")
        assert res.status_code == 422, bad
    assert api.get("/api/commands/nope/output").status_code == 404


def test_a_finished_command_cannot_be_rewritten_by_its_host(make_fleet):
    rf = make_fleet(hosts=2, agents=False)
    rf.start_agent("borealis")
    api = rf.api()
    api.wait_online(["borealis"])
    cid = api.command("atlas", "pull")
    token = rf.host("atlas").token_file.read_text().strip()

    async def host() -> None:
        ws = await connect(rf.base, "atlas", token)
        await messages_until(ws, lambda m: m.get("type") == "command")
        send = [
            {"type": "started", "command_id": cid, "started_at": 1_760_000_000.0},
            {"type": "output", "command_id": cid, "lines": [{"seq": 1, "text": "real"}]},
            {
                "type": "finished",
                "command_id": cid,
                "result": "succeeded",
                "exit_code": 0,
                "duration_s": 1.0,
                "last_seq": 1,
                "detail": "done",
            },
            {"type": "warning", "command_id": cid, "text": "rewritten"},
            {"type": "output", "command_id": cid, "lines": [{"seq": 2, "text": "late"}]},
            {
                "type": "finished",
                "command_id": cid,
                "result": "failed",
                "exit_code": 9,
                "duration_s": 1.0,
                "last_seq": 2,
                "detail": "forged",
            },
        ]
        for msg in send:
            await ws.send(json.dumps(msg))
        # The second final ack answers the last message: everything before it was handled.
        for _ in range(2):
            await messages_until(ws, lambda m: m.get("type") == "ack" and m.get("final"))
        await ws.close()

    asyncio.run(host())
    cmd = api.get(f"/api/commands/{cid}").json()
    assert (cmd["state"], cmd["exit_code"], cmd["detail"]) == ("succeeded", 0, "done")
    assert cmd["warned"] is False
    assert [ln["text"] for ln in cmd["output"]] == ["real"]
    assert api.host("borealis")["online"]


@pytest.mark.parametrize("agent_returns", [False, True])
def test_a_build_whose_agent_died_with_the_dashboard_is_not_stuck(make_fleet, agent_returns):
    """kill -9 of both mid-build, then only the dashboard comes back: after the reconnect
    window the command is lost. If the agent comes back within it, the true result wins."""
    window = "30" if agent_returns else "2"
    rf = make_fleet(hosts=2, build_seconds=4, env={"NIXFLEET_RECONNECT_WINDOW_S": window})
    api = rf.api()
    cid = api.command("atlas", "switch")
    api.wait_state(cid, {"running"})
    rf.kill_agent("atlas")
    rf.kill_dashboard()
    rf.start_dashboard()
    api = rf.api()
    api.wait_online(["borealis"])  # the other host's agent finds the new dashboard
    if agent_returns:
        rf.start_agent("atlas")
        cmd = api.wait_state(cid, FINAL, timeout=60)
        assert cmd["state"] == "succeeded", cmd["detail"]
        assert contiguous(all_output(api, cid))
    else:
        cmd = api.wait_state(cid, FINAL, timeout=30)
        assert cmd["state"] == "lost"
        assert "reconnect window" in cmd["detail"]
    other = api.wait_state(api.command("borealis", "pull"), FINAL, timeout=60)
    assert other["state"] == "succeeded"
