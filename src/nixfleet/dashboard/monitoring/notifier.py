"""Notifications through Apprise URLs, each channel with its own queue, retries and health.

Apprise is synchronous, so each send runs in a thread; a channel that hangs or fails only
delays itself, never a request and never another channel. Channel URLs carry credentials:
only Apprise's privacy-masked form is ever logged or shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nixfleet.security.outbound import private_address

log = logging.getLogger("nixfleet.alerts")
T = TypeVar("T")
NOTIFY_TYPES = {"info", "success", "warning", "failure"}


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    kind: str = "warning"  # an Apprise notify type


@dataclass
class Channel:
    url: str
    name: str  # the masked URL
    plugin: Any  # apprise plugin instance, or None if the URL is invalid
    ok: bool | None = None  # None until the first send
    sent: int = 0
    failures: int = 0
    last_error: str = ""
    last_attempt: float | None = None
    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(maxsize=100))

    def health(self) -> dict[str, Any]:
        return {
            "channel": self.name,
            "ok": self.ok,
            "sent": self.sent,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_attempt": self.last_attempt,
        }


def _channel(url: str) -> Channel:
    import apprise  # only with channels configured: it costs ~0.7 s and several MiB at import

    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        scheme = url.split("://", 1)[0][:20] if "://" in url else "?"
        return Channel(url, f"{scheme}://(invalid URL)", None, ok=False, last_error="invalid URL")
    masked: str = plugin.url(privacy=True)  # type: ignore[no-untyped-call]
    masked = masked.split("?", 1)[0]  # Apprise appends every default option; noise on screen
    return Channel(url, masked, plugin)


async def _in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """Return fn(*args) run in a daemon thread.

    Not asyncio.to_thread: the default executor's threads are joined at interpreter exit,
    so one channel hanging on a read would hold up the dashboard's shutdown.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if done.cancelled():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (fn(*args), None)
        except BaseException as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed while we were sending
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="nixfleet-alert-send", daemon=True).start()
    return await done


class Notifier:
    def __init__(
        self, urls: list[str], allow_private: bool, retries: int, backoff_s: float = 1.0
    ) -> None:
        self.channels = [_channel(u) for u in urls]
        self.allow_private = allow_private
        self.retries = retries
        self.backoff_s = backoff_s
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._pump(c)) for c in self.channels if c.plugin]

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def send(self, message: Message) -> None:
        """Queue message for every channel; never blocks."""
        for channel in self.channels:
            if channel.plugin is None:
                continue
            try:
                channel.queue.put_nowait(message)
            except asyncio.QueueFull:
                channel.failures += 1
                channel.last_error = "queue full: channel too slow, message dropped"
                log.warning("alerts: %s: %s", channel.name, channel.last_error)

    async def send_now(self, message: Message) -> list[dict[str, Any]]:
        """Return each channel's health after delivering message to it (the CLI test)."""
        await asyncio.gather(*(self._deliver(c, message) for c in self.channels if c.plugin))
        return [c.health() for c in self.channels]

    def health(self) -> list[dict[str, Any]]:
        return [c.health() for c in self.channels]

    async def _pump(self, channel: Channel) -> None:
        while True:
            await self._deliver(channel, await channel.queue.get())

    async def _deliver(self, channel: Channel, message: Message) -> None:
        """Send with retries (exponential backoff); record the outcome as channel health."""
        for attempt in range(self.retries + 1):
            channel.last_attempt = time.time()
            error = await _in_daemon_thread(self._send_once, channel, message)
            if error is None:
                channel.ok, channel.last_error = True, ""
                channel.sent += 1
                return
            if error.startswith("refused"):
                break  # a policy refusal does not get better by trying again
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * 2**attempt)
        channel.ok, channel.last_error = False, error or "unknown error"
        channel.failures += 1
        log.warning("alerts: %s: delivery failed: %s", channel.name, error)

    def _send_once(self, channel: Channel, message: Message) -> str | None:
        """Return None when sent, else a short reason (runs in a worker thread)."""
        plugin = channel.plugin
        if getattr(plugin, "protocol", None) and not self.allow_private:
            # Only plugins with a plain-protocol twin (json://, ntfy://, matrix://, mailto://)
            # talk to a server the URL names; cloud services have fixed public endpoints.
            bad = private_address(str(plugin.host), getattr(plugin, "port", None))
            if bad:
                return f"refused: {bad} is a private address (NIXFLEET_ALERT_ALLOW_PRIVATE)"
        import apprise  # already loaded by _channel

        notifier = apprise.Apprise()
        notifier.add(plugin)
        try:
            ok = bool(
                notifier.notify(title=message.title, body=message.body, notify_type=message.kind)
            )
        except Exception as exc:  # a plugin bug must not kill the channel's task
            return f"error: {type(exc).__name__}"
        return None if ok else "the service did not accept the message (see the log)"
