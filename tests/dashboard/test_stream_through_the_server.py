"""The live stream over real HTTP: reconnecting with Last-Event-ID replays what was missed.

(Stalled browsers are tested on the Broadcaster itself, test_stream_robustness.py: over
loopback the kernel buffers megabytes before a non-reading socket pushes back.)"""

from __future__ import annotations

import threading
import time

import httpx

from conftest import wait_for
from ssestream import sse_frames


class Reader:
    """A browser reading /api/events in a thread; frames are (id, event, data, seen_at)."""

    def __init__(self, api, headers=None, params=None) -> None:
        self.frames: list[tuple[int | None, str, dict, float]] = []
        self.client = httpx.Client(base_url=str(api.http.base_url), cookies=api.http.cookies)
        self.open = threading.Event()
        self._stop = False
        args = {"headers": headers or {}, "params": params or {}, "timeout": 30}
        self.thread = threading.Thread(target=self._run, args=(args,), daemon=True)
        self.thread.start()
        assert self.open.wait(10)

    def _run(self, args) -> None:
        try:
            self._read(args)
        except (httpx.HTTPError, RuntimeError):
            if not self._stop:
                raise

    def _read(self, args) -> None:
        with self.client.stream("GET", "/api/events", **args) as res:
            assert res.status_code == 200
            for f in sse_frames(self._lines(res)):
                self.frames.append((f.get("id"), f["event"], f["data"], time.monotonic()))

    def _lines(self, res: httpx.Response):
        for line in res.iter_lines():
            self.open.set()
            if self._stop:
                return
            yield line

    def close(self) -> None:
        self._stop = True
        self.client.close()

    def events(self, kind: str) -> list:
        return [f for f in self.frames if f[1] == kind]


def _add_host(api, name: str) -> None:
    res = api.post("/api/hosts", {"host_id": name})
    assert res.status_code == 201, res.text


def test_reconnecting_with_last_event_id_gets_exactly_the_missed_events(make_fleet):
    rf = make_fleet(hosts=1, agents=False)
    api = rf.api()
    first = Reader(api)
    snap_id = wait_for(lambda: first.events("snapshot"))[0][0]
    first.close()
    for name in ("gap-a", "gap-b", "gap-c"):
        _add_host(api, name)
    for how in (
        {"headers": {"Last-Event-ID": str(snap_id)}},
        {"params": {"last_event_id": snap_id}},
    ):
        again = Reader(api, **how)
        # Other events (the security log's "security" notes) may sit between the hosts.
        frames = wait_for(
            lambda: len(again.events("host")) >= 3 and list(again.frames)  # noqa: B023
        )
        again.close()
        assert [f[0] for f in frames] == list(range(snap_id + 1, snap_id + 1 + len(frames)))
        assert [f[2]["host"]["id"] for f in frames if f[1] == "host"][:3] == [
            "gap-a",
            "gap-b",
            "gap-c",
        ]
