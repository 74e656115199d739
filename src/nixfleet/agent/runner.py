"""The runner: starts one command at a time in the detached runner and follows it.

The agent is only an observer of the command: it reads the journal files the detached
runner writes, so a restarted agent re-attaches to a command started by its predecessor.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nixfleet.agent import codec
from nixfleet.agent.executors import Executor, Target, plan, runner_argv
from nixfleet.agent.journal import Entry, Journal
from nixfleet.core.commands import KIND_RULES, CommandKind, KindRules
from nixfleet.core.wire import PlanReport, Warning

log = logging.getLogger("nixfleet.agent.runner")

# Following a file has no readiness event to wait on portably (no inotify on macOS without
# a dependency); 50 ms keeps the added latency below what a human notices.
_TAIL_INTERVAL_S = 0.05

# Called with a command's entry and its exit record before the result is reported: records
# what a switch deployed, and turns a plan's build into its report (None for other kinds).
Finisher = Callable[[Entry, dict[str, Any]], Awaitable[PlanReport | None]]


async def _no_finisher(_entry: Entry, _record: dict[str, Any]) -> PlanReport | None:
    return None


class Runner:
    """Own the journal entries of this agent and the tasks that follow them."""

    def __init__(
        self,
        journal: Journal,
        executor: Executor,
        target: Target,
        on_change: Callable[[], None],
        rules: Mapping[CommandKind, KindRules] = KIND_RULES,
        finisher: Finisher = _no_finisher,
    ) -> None:
        self.rules = rules
        self.finisher = finisher
        self.journal = journal
        self.executor = executor
        self.target = target
        self.on_change = on_change
        self.entries: dict[str, Entry] = {}
        self.warnings: list[Warning] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def reattach(self) -> None:
        """Follow every command an earlier agent process left in the journal."""
        for entry in self.journal.load_all():
            log.info("agent: re-attaching to command %s (%s)", entry.command_id, entry.kind)
            self.entries[entry.command_id] = entry
            self._follow(entry)

    def busy(self) -> bool:
        """Return True while a command's result is still unknown."""
        return any(e.finished is None for e in self.entries.values())

    def start(
        self,
        command_id: str,
        kind: CommandKind,
        note: dict[str, str] | None = None,
        gate: dict[str, Any] | None = None,
        generation: int | None = None,
    ) -> Entry:
        """Journal the plan (with the caller's note and a switch's health gate, in the
        runner's form: executors.gate_plan), launch the detached runner, follow it."""
        if kind == CommandKind.PLAN:
            (self.target.work_dir / command_id).mkdir(parents=True, exist_ok=True)
        steps = plan(
            self.executor,
            kind,
            self.target,
            time.time(),
            self.rules[kind].kill_after_s,
            command_id,
            gate,
            generation,
        )
        # Host tests (and anyone reading `ps e`) can tell which host and command they serve.
        env = {"NIXFLEET_HOST_ID": self.target.host_id, "NIXFLEET_COMMAND_ID": command_id}
        for step in steps["steps"]:
            step["env"] = {**step.get("env", {}), **env}
        steps["agent_note"] = note or {}
        entry = self.journal.create(command_id, kind.value, steps)
        argv = [*self.executor.launcher(command_id), *runner_argv(entry.path)]
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        self.entries[command_id] = entry
        self._follow(entry)
        return entry

    def cancel(self, command_id: str) -> bool:
        """Ask the runner to stop command_id; return False if it is not running here."""
        entry = self.entries.get(command_id)
        if entry is None or entry.finished is not None:
            return False
        entry.request_cancel()
        return True

    def acknowledge(self, command_id: str, seq: int, final: bool) -> None:
        entry = self.entries.get(command_id)
        if entry is None:
            return
        entry.ack(seq)
        entry.confirm_gate(seq)
        if final and entry.finished is not None:
            self.journal.remove(entry)
            del self.entries[command_id]

    def _follow(self, entry: Entry) -> None:
        task = asyncio.get_running_loop().create_task(self._tail(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tail(self, entry: Entry) -> None:
        warn_after = self.rules[CommandKind(entry.kind)].warn_after_s
        while True:
            record = entry.exit_record()  # read before the lines: no line can follow it
            if entry.scan():
                self.on_change()
            if record is None and not entry.runner_alive():
                entry.scan()
                record = {
                    "result": "failed",
                    "exit_code": None,
                    "detail": "the detached runner died without a result",
                }
            if record is not None:
                entry.scan()
                entry.finish(record, await self._finish(entry, record))
                self.on_change()
                return
            if not entry.warned and time.time() - entry.started_at > warn_after:
                entry.warned = True
                self.warnings.append(
                    Warning(
                        command_id=entry.command_id,
                        text=f"still running after {int(warn_after)} s",
                    )
                )
                self.on_change()
            await asyncio.sleep(_TAIL_INTERVAL_S)

    async def _finish(self, entry: Entry, record: dict[str, Any]) -> PlanReport | None:
        """Return the plan report for entry; a failure to make one fails no command."""
        try:
            plan = await self.finisher(entry, record)
            if plan is not None:
                codec.encode(plan)  # out of the protocol's bounds: no report, as any failure
            return plan
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("agent: after %s (%s): %s", entry.command_id, entry.kind, exc)
            record["detail"] = (record.get("detail") or str(exc))[:500]
            return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
