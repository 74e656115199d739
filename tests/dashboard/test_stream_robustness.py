"""The live stream stays robust while browsers come, go and stall (the Broadcaster itself,
driven in one event loop, so the numbers are about fan-out, not HTTP)."""

from __future__ import annotations

import asyncio
import json
import random
import time

from nixfleet.dashboard import sse
from nixfleet.dashboard.sse import Broadcaster, StreamLimits
from nixfleet.storage.bus import LocalBus


async def _snapshot() -> dict:
    return {"hosts": []}


async def _valid() -> bool:
    return True


def _parse(frame: str) -> tuple[int | None, str | None]:
    seq = kind = None
    for line in frame.splitlines():
        if line.startswith("id: "):
            seq = int(line[4:])
        elif line.startswith("event: "):
            kind = line[7:]
    return seq, kind


async def test_200_browsers_coming_and_going_during_a_broadcast_raise_no_error():
    bus = LocalBus()
    caster = Broadcaster(bus, StreamLimits(queue_size=50, per_session=1000, per_address=1000))
    rng = random.Random(6)
    errors: list[BaseException] = []

    async def browser(n: int) -> None:
        stream = caster.stream(f"s{n % 7}", _snapshot, _valid, address=f"a{n % 13}")
        last = None
        try:
            async for frame in stream:
                seq, kind = _parse(frame)
                if kind in ("snapshot", "resync"):
                    last = seq
                elif seq is not None:
                    assert seq == last + 1, "a browser saw a gap without a resync"
                    last = seq
                if rng.random() < 0.02:
                    break  # the tab closes
                if rng.random() < 0.2:
                    await asyncio.sleep(0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            await stream.aclose()

    async def publisher() -> None:
        for i in range(3000):
            await bus.publish({"type": "host", "host": {"id": f"h{i}"}})
            if i % 10 == 0:
                await asyncio.sleep(0)

    tasks = [asyncio.create_task(browser(n)) for n in range(200)]
    pub = asyncio.create_task(publisher())
    for n in range(200, 400):  # more browsers arrive while events flow
        tasks.append(asyncio.create_task(browser(n)))
        await asyncio.sleep(0)
    await pub
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert errors == []
    assert caster.subscribers == set()


async def _reader(caster, name, received):
    stream = caster.stream(name, _snapshot, _valid, address=name)
    try:
        async for frame in stream:
            _, kind = _parse(frame)
            if kind == "host":
                received.append(time.perf_counter())
            if kind == "resync":
                raise AssertionError(f"{name} fell behind")
    finally:
        await stream.aclose()


async def _delivery_delays(stalled: bool, events: int = 300):
    """Return how long each event took to reach the last of 20 reading browsers.

    Events go out one at a time: the next is published once every reader has the last.
    """
    bus = LocalBus()
    caster = Broadcaster(bus, StreamLimits(queue_size=20, per_session=100, per_address=100))
    received: list[list[float]] = [[] for _ in range(20)]
    readers = [asyncio.create_task(_reader(caster, f"r{i}", received[i])) for i in range(20)]
    stuck = caster.stream("stuck", _snapshot, _valid, address="stuck")
    if stalled:
        await anext(stuck)  # connected (retry line sent) ...
        await anext(stuck)  # ... got its snapshot, and never reads again
    while len(caster.subscribers) < 20 + stalled:
        await asyncio.sleep(0)
    delays = []
    for i in range(events):
        sent = time.perf_counter()
        await bus.publish({"type": "host", "host": {"id": f"h{i}"}})
        while min(len(r) for r in received) <= i:
            await asyncio.sleep(0)
        delays.append(max(r[i] for r in received) - sent)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for task in readers:
        assert task.cancelled(), "a reader failed"
    return delays, caster, stuck


async def test_one_stalled_browser_does_not_delay_the_others_and_gets_a_resync_later():
    baseline, _, idle = await _delivery_delays(stalled=False)
    await idle.aclose()
    delays, caster, stuck = await _delivery_delays(stalled=True)
    # The stalled browser's queue overflowed and it was marked slow; every other reader
    # received all 300 events (checked in _delivery_delays) without ever waiting for it.
    slow = next(s for s in caster.subscribers if s.session == "stuck")
    assert slow.needs_resync
    assert slow.dropped == 300 - 20
    assert caster.slow_total == 1
    base = sorted(baseline)[len(baseline) // 2]
    median = sorted(delays)[len(delays) // 2]
    print(
        f"\nmedian delay until 20 readers have an event: {base * 1e6:.0f} µs without, "
        f"{median * 1e6:.0f} µs with one stalled browser"
    )
    # When it drains, it gets what was queued before the overflow, then one resync.
    kinds = []
    while not kinds or kinds[-1] != "resync":
        kinds.append(_parse(await anext(stuck))[1])
    assert kinds == ["host"] * 20 + ["resync"]
    assert not slow.needs_resync
    await stuck.aclose()


async def test_reconnecting_with_last_event_id_replays_exactly_the_missed_events():
    bus = LocalBus()
    caster = Broadcaster(bus, StreamLimits(replay_size=100))
    stream = caster.stream("s", _snapshot, _valid)
    await anext(stream)
    seen, _ = _parse(await anext(stream))  # the snapshot's id
    await stream.aclose()
    for i in range(5):
        await bus.publish({"type": "host", "host": {"id": f"h{i}"}})
    again = caster.stream("s", _snapshot, _valid, last_event_id=seen)
    await anext(again)
    frames = [_parse(await anext(again)) for _ in range(5)]
    assert frames == [(seen + i, "host") for i in range(1, 6)]
    await again.aclose()


async def test_a_last_event_id_older_than_the_ring_gets_a_resync():
    bus = LocalBus()
    caster = Broadcaster(bus, StreamLimits(replay_size=10))
    first = caster.seq
    for i in range(30):
        await bus.publish({"type": "host", "host": {"id": f"h{i}"}})
    for stale in (first, first + 5, caster.seq + 50, 12):  # too old, or from another process
        again = caster.stream("s", _snapshot, _valid, last_event_id=stale)
        await anext(again)
        assert _parse(await anext(again)) == (caster.seq, "resync")
        await again.aclose()


async def test_past_the_total_cap_no_session_or_address_gets_another_stream():
    caster = Broadcaster(LocalBus(), StreamLimits(per_session=8, per_address=8, total=3))
    streams = []
    for i in range(3):  # three sessions from three addresses: each under its own caps
        stream = caster.stream(f"s{i}", _snapshot, _valid, address=f"10.0.0.{i}")
        await anext(stream)
        streams.append(stream)
    assert await caster.admit("s9", "10.0.0.9") == (
        None,
        "the dashboard already serves 3 open event streams",
    )
    await streams.pop().aclose()
    assert await caster.admit("s9", "10.0.0.9") == (None, None)  # one closed: room again
    for stream in streams:
        await stream.aclose()


def _data(frame: str) -> dict:
    return json.loads(next(line[6:] for line in frame.splitlines() if line.startswith("data: ")))


async def test_events_while_no_browser_is_connected_are_replayed_whole_and_encoded_once(
    monkeypatch,
):
    encoded: list[int] = []
    real_frame = sse._frame

    def counting(seq, kind, data):
        encoded.append(seq)
        return real_frame(seq, kind, data)

    monkeypatch.setattr(sse, "_frame", counting)
    bus = LocalBus()
    caster = Broadcaster(bus, StreamLimits(replay_size=100))
    for i in range(3):  # before any browser: no id of this process is known to anyone
        await bus.publish({"type": "host", "host": {"id": f"early{i}"}})
    stream = caster.stream("s", _snapshot, _valid)
    await anext(stream)
    seen, _ = _parse(await anext(stream))  # the snapshot's id
    await stream.aclose()
    encoded.clear()  # the snapshot's frame
    published = [
        {"type": "host", "host": {"id": f"h{i}", "load": i / 7, "labels": {"rôle": "wéb"}}}
        if i % 2
        else {"type": "output", "command_id": "c1", "lines": [{"seq": i, "text": "ok " * i}]}
        for i in range(40)
    ]
    for event in published:
        await bus.publish(event)
    assert encoded == [], "events were encoded although no browser was connected"
    for _ in range(2):  # two tabs come back with the same Last-Event-ID
        again = caster.stream("s", _snapshot, _valid, last_event_id=seen)
        await anext(again)
        frames = [await anext(again) for _ in published]
        await again.aclose()
        assert [_parse(f) for f in frames] == [
            (seen + i, e["type"]) for i, e in enumerate(published, 1)
        ]
        assert [_data(f) for f in frames] == published
    assert sorted(encoded) == [seen + i for i in range(1, 41)], "each event encoded once"


async def test_the_replay_ring_stays_within_its_bytes_while_no_browser_is_connected():
    bound = 64 * 1024
    bus = LocalBus()
    caster = Broadcaster(bus, StreamLimits(replay_size=1000, replay_bytes=bound))
    stream = caster.stream("s", _snapshot, _valid)
    await anext(stream)
    seen, _ = _parse(await anext(stream))
    await stream.aclose()
    for i, text in enumerate(["x" * 4000, "é" * 4000, "日" * 4000] * 40):
        await bus.publish(
            {"type": "output", "command_id": "c1", "lines": [{"seq": i, "text": text}]}
        )
    held = sum(len(e["lines"][0]["text"].encode()) for _, e, _ in caster.recent)
    assert 0 < held <= bound, f"the ring holds {held} bytes of text"
    # A browser away for all 120 events gets a resync; one away for the last few gets them.
    again = caster.stream("s", _snapshot, _valid, last_event_id=seen)
    await anext(again)
    assert _parse(await anext(again)) == (caster.seq, "resync")
    await again.aclose()
    recent = caster.seq - 3
    again = caster.stream("s", _snapshot, _valid, last_event_id=recent)
    await anext(again)
    got = [_data(await anext(again))["lines"][0]["seq"] for _ in range(3)]
    await again.aclose()
    assert got == [117, 118, 119]
