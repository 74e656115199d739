"""Deploy notifications: a failed, timed-out or rolled-back deploy and a rollout's end go
through the alert channels (notifier.py), each event with its own switch and cooldown
(core.deploy_alerts).

A deploy that is part of a rollout is not announced alone: the rollout's report, sent
when it stops or ends, says it, and one message beats fifty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from nixfleet.core.deploy_alerts import EVENT_OF_STATE, Cooldowns, DeployEvent, DeployRule
from nixfleet.core.guards import DEPLOY_KINDS
from nixfleet.dashboard.monitoring.notifier import Message, Notifier
from nixfleet.storage import rollouts as rollout_store
from nixfleet.storage.db import Database

log = logging.getLogger("nixfleet.alerts")
_WORDS = {
    DeployEvent.DEPLOY_FAILED: "failed",
    DeployEvent.DEPLOY_TIMED_OUT: "timed out",
    DeployEvent.DEPLOY_ROLLED_BACK: "rolled back",
}


class DeployAlerts:
    def __init__(
        self,
        rules: dict[DeployEvent, DeployRule],
        notifier: Notifier,
        db: Database,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cooldowns = Cooldowns(rules)
        self.notifier = notifier
        self.db = db
        self.clock = clock
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="deploy-alerts")

    async def shutdown(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on_command_finished(self, cmd: dict[str, Any]) -> None:
        """Fleet's finished hook: queue a deploy that ended badly (never blocks)."""
        if cmd["kind"] in DEPLOY_KINDS and cmd["state"] in EVENT_OF_STATE:
            with contextlib.suppress(asyncio.QueueFull):  # a flood: the rollout says it
                self._queue.put_nowait(cmd)

    async def _run(self) -> None:
        while True:
            cmd = await self._queue.get()
            try:
                await self._command(cmd)
            except Exception:  # the next one must still be judged
                log.exception("alerts: announcing deploy %s failed", cmd["id"])

    async def _command(self, cmd: dict[str, Any]) -> None:
        if await rollout_store.rollout_of_commands(self.db, [cmd["id"]]):
            return
        event = EVENT_OF_STATE[cmd["state"]]
        send, held = self.cooldowns.admit(event, cmd["host_id"], self.clock())
        if not send:
            return
        why = cmd.get("detail") or (
            f"exit {cmd['exit_code']}" if cmd.get("exit_code") is not None else ""
        )
        body = f"{cmd['kind']} on {cmd['host_id']} {_WORDS[event]}"
        body += f": {why[:300]}." if why else "."
        if held:
            body += f" ({held} more like it were held back by the cooldown.)"
        self.send(Message(f"NixFleet deploy {_WORDS[event]}: {cmd['host_id']}", body, "failure"))

    def rollout_ended(self, rollout: dict[str, Any]) -> None:
        """The rollout engine's hook: announce a rollout that stopped or ended."""
        stopped = rollout["state"] == "stopped"
        event = DeployEvent.ROLLOUT_STOPPED if stopped else DeployEvent.ROLLOUT_FINISHED
        send, _ = self.cooldowns.admit(event, rollout["id"], self.clock())
        if not send:
            return
        kind = {"completed": "success", "aborted": "warning"}.get(rollout["state"], "failure")
        title = (
            f"NixFleet rollout {rollout['state']}: {rollout['kind']} on "
            f"{rollout['counts']['total']} hosts"
        )
        self.send(Message(title, rollout["report"], kind))

    def send(self, message: Message) -> None:
        log.warning("alerts: %s: %s", message.title, message.body)
        self.notifier.send(message)
