"""Browsers get a snapshot, then ordered deltas with contiguous ids, over SSE."""

from __future__ import annotations

import threading
import time

import httpx

from ssestream import sse_frames


def _read_events(api, stop_when, limit=2000):
    """Return (id, event, data) frames from /api/events until stop_when(frames) is true."""
    frames = []
    with (
        httpx.Client(
            base_url=str(api.http.base_url), cookies=api.http.cookies, timeout=30
        ) as client,
        client.stream("GET", "/api/events") as res,
    ):
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        for frame in sse_frames(res.iter_lines()):
            frames.append(frame)
            if stop_when(frames) or len(frames) >= limit:
                return frames
    return frames


def test_a_browser_sees_the_snapshot_then_a_commands_whole_life_in_order(make_fleet):
    rf = make_fleet(hosts=2)
    api = rf.api()
    box: dict = {}

    def done(frames):
        return any(
            f["event"] == "command" and f["data"]["command"]["state"] == "succeeded" for f in frames
        )

    reader = threading.Thread(target=lambda: box.setdefault("frames", _read_events(api, done)))
    reader.start()
    # Wait for the stream to be open before acting (the snapshot lists both hosts).

    time.sleep(1)
    cid = api.command("atlas", "switch")
    reader.join(60)
    frames = box["frames"]
    assert frames[0]["event"] == "snapshot"
    assert {h["id"] for h in frames[0]["data"]["hosts"]} == {"atlas", "borealis"}
    ids = [f["id"] for f in frames]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "event ids must be contiguous"
    states = [
        f["data"]["command"]["state"]
        for f in frames
        if f["event"] == "command" and f["data"]["command"]["id"] == cid
    ]
    assert states == ["queued", "dispatched", "running", "succeeded"]
    streamed = [
        ln["seq"]
        for f in frames
        if f["event"] == "output"
        for ln in f["data"]["lines"]
        if f["data"]["command_id"] == cid
    ]
    stored = [ln["seq"] for ln in api.get(f"/api/commands/{cid}").json()["output"]]
    assert streamed == stored


def test_the_event_stream_needs_a_session(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    assert httpx.get(f"{rf.base}/api/events").status_code == 401


def test_logging_out_ends_that_sessions_open_stream_at_once(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    events: list[str] = []

    def read() -> None:
        with (
            httpx.Client(base_url=rf.base, cookies=api.http.cookies, timeout=30) as client,
            client.stream("GET", "/api/events") as res,
        ):
            for line in res.iter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
        events.append("<closed>")

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while "snapshot" not in events and time.monotonic() < deadline:
        time.sleep(0.05)
    other = rf.api()  # a second session is not affected by the first one's logout
    assert api.http.post("/logout", data={"csrf_token": api.csrf}).status_code == 303
    reader.join(10)
    assert events[-2:] == ["session_ended", "<closed>"]
    assert other.get("/api/hosts").status_code == 200
