"""Alerting: security events go through the rule engine; transitions become notifications.

The SecurityLog listener only queues. One task feeds the engine and wakes either for the
next event or when the oldest event of a firing rule leaves its window (its incident may
have ended) — no polling tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import tomllib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from nixfleet.core.alerts import DEFAULT_RULES, AlertRule, RuleEngine, Transition, parse_rules
from nixfleet.core.deploy_alerts import (
    DEFAULT_DEPLOY_RULES,
    DeployEvent,
    DeployRule,
    parse_deploy_rules,
)
from nixfleet.core.errors import ConfigError
from nixfleet.core.secevents import SecurityEvent
from nixfleet.dashboard.monitoring.notifier import Message, Notifier
from nixfleet.storage.bus import EventBus

log = logging.getLogger("nixfleet.alerts")
T = TypeVar("T")


def load_rules(path: Path | None) -> list[AlertRule]:
    """Return the rules in the TOML file at path, or the defaults; ConfigError if bad."""
    if path is None:
        return list(DEFAULT_RULES)
    return _load(path, parse_rules)


def load_deploy_rules(path: Path | None) -> dict[DeployEvent, DeployRule]:
    """Return the `[[deploy]]` rules of the same file over the defaults; ConfigError if bad."""
    if path is None:
        return dict(DEFAULT_DEPLOY_RULES)
    return _load(path, parse_deploy_rules)


def _load(path: Path, parse: Callable[[dict[str, Any]], T]) -> T:
    try:
        return parse(tomllib.loads(path.read_text()))
    except OSError as exc:
        raise ConfigError(f"config: NIXFLEET_ALERT_RULES_FILE: {exc.strerror}: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: NIXFLEET_ALERT_RULES_FILE: {path}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"config: NIXFLEET_ALERT_RULES_FILE: {exc}") from None


def message(tr: Transition) -> Message:
    """Return the notification for one transition."""
    rule = tr.rule
    what = rule.summary or rule.name
    where = f" from {', '.join(tr.addresses)}" if tr.addresses else ""
    window = f"{rule.window_s:g} s"
    if tr.state == "firing":
        body = f"{what}: {tr.count} {rule.kind} events in {window}{where}."
        return Message(f"NixFleet alert: {rule.name}", body, "failure")
    body = f"{what}: fewer than {rule.threshold} {rule.kind} events in the last {window} now."
    return Message(f"NixFleet resolved: {rule.name}", body, "success")


class Alerts:
    def __init__(
        self,
        rules: list[AlertRule],
        notifier: Notifier,
        bus: EventBus,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = RuleEngine(rules)
        self.notifier = notifier
        self.bus = bus
        self.clock = clock
        self.history: deque[dict[str, Any]] = deque(maxlen=50)
        self._queue: asyncio.Queue[SecurityEvent] = asyncio.Queue(maxsize=10_000)
        self._task: asyncio.Task[None] | None = None

    def __call__(self, event: SecurityEvent) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            # A full queue means a flood: the rules that matter are already firing.
            self._queue.put_nowait(event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alerts")

    async def shutdown(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock()) + 0.01
            event: SecurityEvent | None = None
            with contextlib.suppress(TimeoutError):
                event = await asyncio.wait_for(self._queue.get(), timeout)
            now = self.clock()
            transitions = self.engine.observe(event, now) if event else []
            for tr in transitions + self.engine.tick(now):
                try:
                    await self._announce(tr)
                except Exception:  # the next event must still be judged
                    log.exception("alerts: announcing %s failed", tr.rule.name)

    async def _announce(self, tr: Transition) -> None:
        msg = message(tr)
        log.warning("alerts: %s: %s", msg.title, msg.body)
        entry = {"rule": tr.rule.name, "state": tr.state, "at": tr.at, "count": tr.count}
        self.history.appendleft(entry)
        self.notifier.send(msg)
        await self.bus.publish({"type": "security", "alert": entry})

    def state(self) -> list[dict[str, Any]]:
        """Return each rule with whether it is firing (for the security panel)."""
        now = self.clock()
        return [
            {
                "rule": s.rule.name,
                "summary": s.rule.summary,
                "firing": s.firing,
                "silent": s.silent,
                "since": s.since if s.firing else None,
                "in_window": sum(1 for t, _ in s.times if t > now - s.rule.window_s),
                "threshold": s.rule.threshold,
                "window_s": s.rule.window_s,
            }
            for s in self.engine.states
        ]
