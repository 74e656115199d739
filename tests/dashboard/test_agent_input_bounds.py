"""A host with a valid token cannot hurt the dashboard with what it sends: every field is
bounded and typed, a bad frame gets a clean close 4400 (1009 when over the size limit)
and a security event naming the host, and no other host's view changes."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from conftest import RunningFleet, wait_for
from nixfleet.demo.run import prepare
from rawagent import close_code, connect, db_rows, first_sse_event, hello, strict_json

METRICS_TOKEN = "metrics-token-for-the-bounds-tests-0123"
BIG = "9" * 400


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """One dashboard for the module: atlas is played by the tests, borealis is a real agent."""
    root = tmp_path_factory.mktemp("bounds")
    rf = RunningFleet(
        prepare(root, 2, extra_env={"NIXFLEET_METRICS_TOKEN": METRICS_TOKEN}),
        uuid.uuid4().hex,
        1.0,
    )
    rf.start_dashboard(log_level="info")
    rf.start_agent("borealis")
    rf.api().wait_online(["borealis"])
    yield rf
    rf.stop()
    log = (rf.fleet.root / "dashboard.log").read_text(errors="replace")
    assert "Traceback" not in log, "the dashboard logged a traceback"
    assert "unhandled error" not in log


def token(rf: RunningFleet) -> str:
    return rf.host("atlas").token_file.read_text().strip()


def status(**fields) -> str:
    return json.dumps({"type": "status", "status": {"hostname": "atlas", **fields}})


FRAMES = {
    "lock_modified_400_digits": status().replace(
        '"hostname"', f'"lock_modified": {BIG}, "hostname"'
    ),
    "lock_modified_before_1970": status(lock_modified=-5),
    "load_nan": status().replace('"hostname"', '"load1": NaN, "hostname"'),
    "uptime_infinity": status().replace('"hostname"', '"uptime_s": Infinity, "hostname"'),
    "memory_beyond_64_bits": status(mem_total=2**64),
    "hostname_of_a_million_characters": status(hostname="h" * 1_000_000),
    "hostname_with_nul": status(hostname="at\u0000las"),
    "number_as_a_string": status(mem_total="12"),
    "seq_beyond_64_bits": json.dumps(
        {"type": "output", "command_id": "c1", "lines": [{"seq": 2**64, "text": "x"}]}
    ),
    "exit_code_beyond_64_bits": json.dumps(
        {
            "type": "finished",
            "command_id": "c1",
            "result": "failed",
            "exit_code": 2**64,
            "duration_s": 1.0,
            "last_seq": 0,
        }
    ),
    "started_at_nan": '{"type": "started", "command_id": "c1", "started_at": NaN}',
    "too_many_lines": json.dumps(
        {
            "type": "output",
            "command_id": "c1",
            "lines": [{"seq": i, "text": "x"} for i in range(1, 2002)],
        }
    ),
    "warning_of_10000_characters": json.dumps(
        {"type": "warning", "command_id": "c1", "text": "w" * 10_000}
    ),
    "bad_command_id": json.dumps({"type": "warning", "command_id": "../x", "text": "w"}),
    "unknown_type": json.dumps({"type": "rootkit"}),
    "not_json": "{this is not json",
}


async def _refusal(rf: RunningFleet, frame: str | bytes) -> int | None:
    ws = await connect(rf.base, "atlas", token(rf))
    await ws.send(frame)
    return await close_code(ws)


def _refused_events(rf: RunningFleet, detail: str) -> int:
    rows = db_rows(
        rf.fleet.root,
        "SELECT count(*) FROM security_events WHERE kind = 'bad_agent_message' "
        "AND host = 'atlas' AND detail = ?",
        detail,
    )
    return int(rows[0][0])


def _metric(rf: RunningFleet, reason: str) -> float:
    res = httpx.get(
        f"{rf.base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    for line in res.text.splitlines():
        if line.startswith(f'nixfleet_agent_messages_refused_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no refused-message counter for {reason}")


def _others_unaffected(rf: RunningFleet) -> None:
    """Every reader still works and borealis is as its own agent reported it."""
    api = rf.api()
    res = api.get("/api/hosts")
    assert res.status_code == 200
    hosts = {h["id"]: h for h in strict_json(res.text)["hosts"]}
    assert hosts["borealis"]["online"]
    assert hosts["borealis"]["status"]["current_system"].startswith("/nix/store/")
    name, snapshot = first_sse_event(api)
    assert name == "snapshot"
    assert {h["id"] for h in snapshot["hosts"]} == {"atlas", "borealis"}


@pytest.mark.parametrize("case", sorted(FRAMES))
def test_a_frame_out_of_bounds_is_closed_4400_with_an_event_naming_the_host(fleet, case):
    detail = "not_json" if case == "not_json" else "invalid"
    before_events, before_count = _refused_events(fleet, detail), _metric(fleet, detail)
    assert asyncio.run(_refusal(fleet, FRAMES[case])) == 4400
    wait_for(lambda: _refused_events(fleet, detail) == before_events + 1, 10, "the event")
    assert _metric(fleet, detail) == before_count + 1
    stored = db_rows(fleet.fleet.root, "SELECT status FROM hosts WHERE id = 'atlas'")[0][0]
    assert len(stored) < 2000 and "NaN" not in stored and BIG not in stored
    _others_unaffected(fleet)


def test_a_binary_frame_is_closed_4400_and_counted(fleet):
    before = _metric(fleet, "binary")
    assert asyncio.run(_refusal(fleet, b"\x00\xff binary")) == 4400
    wait_for(lambda: _refused_events(fleet, "binary") >= 1, 10, "the event")
    assert _metric(fleet, "binary") == before + 1
    log = (fleet.fleet.root / "dashboard.log").read_text(errors="replace")
    assert "refused a message from atlas (binary)" in log
    _others_unaffected(fleet)


def test_a_frame_over_the_size_limit_is_refused_before_it_is_buffered(fleet):
    before = _metric(fleet, "too_large")
    frame = status(hostname="h" * (2 * 2**20))
    assert asyncio.run(_refusal(fleet, frame)) == 1009
    wait_for(lambda: _refused_events(fleet, "too_large") >= 1, 10, "the event")
    assert _metric(fleet, "too_large") == before + 1
    _others_unaffected(fleet)


def test_a_bad_hello_is_refused_4400_and_never_connects_the_host(fleet):
    before = fleet.api().host("atlas")["connected_at"]

    async def attempt() -> int | None:
        ws = await connect(fleet.base, "atlas", token(fleet), say_hello=False)
        bad = hello("atlas", lock_modified=int(BIG))
        await ws.send(json.dumps(bad))
        return await close_code(ws)

    assert asyncio.run(attempt()) == 4400
    assert fleet.api().host("atlas")["connected_at"] == before
    _others_unaffected(fleet)


def test_a_good_status_after_a_reconnect_is_stored(fleet):
    async def session() -> None:
        ws = await connect(fleet.base, "atlas", token(fleet))
        await ws.send(status(lock_modified=1_700_000_000, load1=0.5, os_version="25.05"))
        await ws.send(json.dumps({"type": "status", "status": {"hostname": "atlas"}, "ref": 7}))
        while json.loads(await ws.recv()).get("type") != "status_ack":
            pass
        await ws.close()

    asyncio.run(session())
    atlas = fleet.api().host("atlas")
    assert atlas["status"]["hostname"] == "atlas"


def test_an_agent_whose_host_has_an_odd_lock_file_keeps_reporting(fleet):
    """Our own agent reads its host's values through the same bounds: a flake.lock with a
    400-digit lastModified is left out of its status instead of failing every heartbeat."""
    lock = fleet.host("borealis").root / "repo" / "flake.lock"
    lock.write_text(json.dumps({"nodes": {"nixpkgs": {"locked": {"lastModified": int(BIG)}}}}))
    api = fleet.api()
    before = api.host("borealis")["status"]["lock_hash"]
    reported = wait_for(
        lambda: (h := api.host("borealis"))["status"]["lock_hash"] != before and h,
        30,
        "a heartbeat with the new lock file",
    )
    assert reported["online"] and reported["status"]["lock_modified"] is None
    log = (fleet.host("borealis").root / "agent.log").read_text(errors="replace")
    assert "Traceback" not in log and "ValidationError" not in log


def test_a_bad_status_stored_before_the_bounds_does_not_break_any_reader(fleet):
    """A row written by an older dashboard (400-digit lock time, NaN load, a huge name)
    reads with those fields unknown; the host list and the event stream keep working."""
    row = (
        '{"hostname": "' + "h" * 100_000 + '", "os_kind": "nixos", "load1": NaN, '
        f'"uptime_s": Infinity, "lock_modified": {BIG}, "commit": "abc", "generation": 4}}'
    )
    db_rows(fleet.fleet.root, "UPDATE hosts SET status = ? WHERE id = 'atlas'", row)
    api = fleet.api()
    res = api.get("/api/hosts")
    assert res.status_code == 200
    atlas = next(h for h in strict_json(res.text)["hosts"] if h["id"] == "atlas")
    assert atlas["lock_age_days"] is None
    assert atlas["status"]["load1"] == 0 and atlas["status"]["hostname"] == ""
    # The good fields of the same row survive.
    assert (atlas["status"]["commit"], atlas["status"]["generation"]) == ("abc", 4)
    _others_unaffected(fleet)
    # A dashboard restart (the issue: "it survives a restart") changes nothing.
    fleet.kill_dashboard()
    fleet.start_dashboard(log_level="info")
    fleet.api().wait_online(["borealis"])
    assert fleet.api().get("/api/hosts").status_code == 200
    _others_unaffected(fleet)
