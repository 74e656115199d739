"""An open event stream meets a database out of reach: it ends as a stream (the browser opens
a new one by itself) instead of as a 500 with a traceback; a bug still surfaces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from sqlalchemy.exc import OperationalError

from nixfleet.dashboard.routes.events import _ended_quietly_by_an_outage


async def _frames(fail: Exception | None, closed: list[str]) -> AsyncGenerator[str, None]:
    try:
        yield "retry: 2000\n\n"
        yield "event: snapshot\ndata: {}\n\n"
        if fail is not None:
            raise fail
        yield ": keep-alive\n\n"
        await asyncio.sleep(3600)
    finally:
        closed.append("closed")  # the stream's seat and subscription are given back here


def _outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def test_an_outage_ends_the_stream_after_what_was_sent():
    closed: list[str] = []

    async def read() -> list[str]:
        return [f async for f in _ended_quietly_by_an_outage(_frames(_outage(), closed))]

    assert asyncio.run(read()) == ["retry: 2000\n\n", "event: snapshot\ndata: {}\n\n"]
    assert closed == ["closed"]


def test_a_bug_is_not_taken_for_an_outage():
    async def read() -> None:
        async for _ in _ended_quietly_by_an_outage(_frames(ValueError("a bug"), [])):
            pass

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(read())


def test_a_browser_that_leaves_closes_the_stream_at_once():
    closed: list[str] = []

    async def leave_early() -> None:
        stream = _ended_quietly_by_an_outage(_frames(None, closed))
        assert await anext(stream) == "retry: 2000\n\n"
        await stream.aclose()  # what Starlette does when the browser disconnects

    asyncio.run(leave_early())
    assert closed == ["closed"]
