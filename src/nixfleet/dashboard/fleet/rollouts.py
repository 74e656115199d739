"""The rollout engine: starts waves, judges them, stops, pauses, aborts and reports.

Decisions come from core.rollouts, state lives in the database (storage.rollouts), and
every change is published as a `rollout` event after it is stored. The engine wakes at once
when a command ends (the end of a wave is the end of its last command) or a pause between
waves ends; a command that was only queued, claimed or started cannot decide anything, so
those move the live counts within COUNTS_EVERY_S, together. Nothing it knows lives only in
memory, so a restarted dashboard carries on where the last one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Any

from nixfleet.core import guards
from nixfleet.core import rollouts as rules
from nixfleet.core.commands import FINAL_STATES, CommandKind
from nixfleet.core.errors import Conflict, NixFleetError, for_people
from nixfleet.core.hostid import canonical_host_id
from nixfleet.core.rollouts import (
    Outcome,
    RolloutPolicy,
    RolloutState,
    WaveVerdict,
    group_value,
)
from nixfleet.dashboard.fleet.service import Fleet
from nixfleet.storage import commands as command_store
from nixfleet.storage import hosts as host_store
from nixfleet.storage import rollouts as store
from nixfleet.storage.db import log_failure

log = logging.getLogger("nixfleet.rollouts")
# Told about a rollout (its summary) when it stops or ends: the deploy notifications.
Notify = Callable[[dict[str, Any]], None]
# Safety net only: every transition the engine needs wakes it without this.
IDLE_WAKE_S = 30.0
# A 1,000-host rollout woken by each of its 4,000 command moves spent the dashboard on
# re-reading itself, and the last finish of a wave waited behind that: bench/rollout_gap.
COUNTS_EVERY_S = 1.0


class Rollouts:
    def __init__(self, fleet: Fleet, notify: Notify | None = None) -> None:
        self.fleet = fleet
        self.db = fleet.db
        self.bus = fleet.bus
        self.clock = fleet.clock
        self.notify = notify or (lambda rollout: None)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._settling: set[str] = set()  # ended, with hosts still finishing
        self._announced: dict[str, tuple[Any, ...]] = {}
        self._counts_timer: asyncio.TimerHandle | None = None
        self._announced_at: dict[str, float] = {}

    # --- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        self._unsubscribe = self.bus.subscribe(self._on_event)
        self._task = asyncio.create_task(self._run(), name="rollouts")

    async def shutdown(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        if self._counts_timer is not None:
            self._counts_timer.cancel()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "command":
            return
        if event["command"].get("state") in FINAL_STATES:
            self._wake.set()  # a host ended: its wave may be decided now
        elif self._counts_timer is None:
            self._counts_timer = asyncio.get_running_loop().call_later(
                COUNTS_EVERY_S, self._counts_due
            )

    def _counts_due(self) -> None:
        self._counts_timer = None
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            next_at = await self.tick()
            wait = IDLE_WAKE_S if next_at is None else max(0.0, next_at - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, IDLE_WAKE_S))

    async def tick(self) -> float | None:
        """Step every open rollout and announce the ones whose counts moved; return the
        earliest time one of them wants to be looked at again (a pause ending, counts that
        moved too soon after the last event to be sent yet)."""
        next_at: float | None = None
        try:
            ids = [*await store.open_ids(self.db), *self._settling]
        except Exception as exc:
            log_failure(log, "rollouts: reading the open rollouts", exc)
            return None
        for rollout_id in dict.fromkeys(ids):
            try:
                due = await self.step(rollout_id)
                later = await self._announce_when_due(rollout_id)
            except Exception as exc:  # one broken rollout must not stall the others
                log_failure(log, f"rollouts: stepping {rollout_id}", exc)
                continue
            for at in (due, later):
                if at is not None:
                    next_at = at if next_at is None else min(next_at, at)
        return next_at

    async def _announce_when_due(self, rollout_id: str) -> float | None:
        """Announce the rollout if it moved, at most once per COUNTS_EVERY_S (each event
        has every open rollout page read the whole rollout again); else return when.

        A new wave, a pause or an end is published at once by the step that made it.
        """
        last = self._announced_at.get(rollout_id)
        if last is not None and self.clock() - last < COUNTS_EVERY_S:
            return last + COUNTS_EVERY_S
        await self._announce_if_moved(rollout_id)
        return None

    async def _announce_if_moved(self, rollout_id: str) -> None:
        """Publish the rollout when its counts or state changed since the last event.

        An ended rollout whose running hosts are still finishing stays watched until the
        last one ends; then its report is final and stored.
        """
        summary = await self.summary(rollout_id)
        key = _key(summary)
        ended = RolloutState(summary["state"]) in rules.FINAL
        pending = any(summary["counts"].get(o.value) for o in rules.PENDING)
        if ended and not pending and rollout_id in self._settling:
            self._settling.discard(rollout_id)
            state = RolloutState(summary["state"])
            await store.set_fields(self.db, rollout_id, [state], report=summary["report"])
        elif ended and pending:
            self._settling.add(rollout_id)
        if self._announced.get(rollout_id) != key:
            self._announced[rollout_id] = key
            self._announced_at[rollout_id] = self.clock()
            await self.bus.publish({"type": "rollout", "rollout": summary})
        if ended and not pending:
            self._announced.pop(rollout_id, None)
            self._announced_at.pop(rollout_id, None)
            self._locks.pop(rollout_id, None)

    # --- creating -----------------------------------------------------------------
    async def plan(
        self, raw_ids: Collection[str], kind_text: str, policy: RolloutPolicy
    ) -> dict[str, Any]:
        """Return what a rollout would do: its waves and the hosts it would leave out."""
        kind = rules.rollout_kind(kind_text)
        wanted, refused = await self._known_hosts(raw_ids)
        labels = {h["id"]: group_value(h, policy.group_by) for h in wanted}
        waves = rules.plan_waves([h["id"] for h in wanted], policy, labels)
        return {
            "kind": kind.value,
            "policy": policy.model_dump(),
            "waves": waves,
            "refused": refused,
        }

    async def _known_hosts(
        self, raw_ids: Collection[str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """Return the known hosts among raw_ids and one refusal for each of the others."""
        refused: list[dict[str, str]] = []
        ids: list[str] = []
        for raw in dict.fromkeys(raw_ids):
            try:
                ids.append(canonical_host_id(raw))
            except NixFleetError as exc:
                refused.append({"host_id": raw[:63], "detail": for_people(str(exc))})
        rows = {h["id"]: h for h in await host_store.get_many(self.db, ids)}
        for host_id in dict.fromkeys(ids):
            reason = guards.undeliverable(rows[host_id]) if host_id in rows else None
            if host_id not in rows:
                refused.append({"host_id": host_id, "detail": f"There is no host {host_id!r}."})
            elif reason:
                refused.append({"host_id": host_id, "detail": for_people(reason)})
                del rows[host_id]
        return [rows[h] for h in dict.fromkeys(ids) if h in rows], refused

    async def create(
        self,
        actor: str,
        raw_ids: Collection[str],
        kind_text: str,
        policy: RolloutPolicy,
        source: str = "",
    ) -> dict[str, Any]:
        """Return the new rollout (its first wave already queued) and the hosts refused."""
        planned = await self.plan(raw_ids, kind_text, policy)
        if not planned["waves"]:
            raise Conflict("rollouts: none of the hosts named can take part")
        now = self.clock()
        row = {
            "id": uuid.uuid4().hex,
            "actor": actor[:100],
            "source": source[:80],
            "kind": planned["kind"],
            "target": self.fleet.target,
            "policy": policy.model_dump(),
            "state": RolloutState.RUNNING.value,
            "wave": -1,
            "waves": len(planned["waves"]),
            "created_at": now,
            "updated_at": now,
        }
        await store.create(self.db, row, planned["waves"])
        await self.step(row["id"])
        self._wake.set()
        return {**await self.view(row["id"]), "refused": planned["refused"]}

    # --- the step ---------------------------------------------------------------------
    def _lock(self, rollout_id: str) -> asyncio.Lock:
        return self._locks.setdefault(rollout_id, asyncio.Lock())

    async def step(self, rollout_id: str) -> float | None:
        """Move a rollout on as far as it can go now; return when to look again, if timed.

        1. Judge the current wave: over budget → stop (queued hosts cancelled);
           still at work → wait for its commands.
        2. A passed last wave completes the rollout.
        3. Otherwise the next wave starts once the pause after this one is over
           (only while running: a paused rollout finishes its wave and waits).
        """
        async with self._lock(rollout_id):
            ro = await store.get(self.db, rollout_id)
            state = RolloutState(ro["state"])
            if state in rules.FINAL:
                return None
            policy = RolloutPolicy.model_validate(ro["policy"])
            if ro["wave"] >= 0:
                verdict = await self._verdict(rollout_id, ro["wave"], policy)
                if verdict == WaveVerdict.OVER_BUDGET:
                    await self._finish(ro, RolloutState.STOPPED)
                    return None
                if verdict == WaveVerdict.PENDING:
                    return None
                if ro["wave"] + 1 >= ro["waves"]:
                    await self._finish(ro, RolloutState.COMPLETED)
                    return None
            if state != RolloutState.RUNNING:
                return None
            return await self._next_wave(ro, policy)

    async def _verdict(self, rollout_id: str, wave: int, policy: RolloutPolicy) -> WaveVerdict:
        by_state, _ = await store.tally(self.db, rollout_id, wave)
        outcomes = [rules.outcome_of(s, True) for s, n in by_state.items() for _ in range(n)]
        return rules.wave_verdict(outcomes, policy.failure_budget)

    async def _next_wave(self, ro: dict[str, Any], policy: RolloutPolicy) -> float | None:
        """Start the next wave now, or return when its pause ends."""
        now = self.clock()
        if ro["wave"] >= 0 and policy.pause_s > 0:
            due = ro["next_wave_at"]
            if due is None:
                due = now + policy.pause_s
                await store.set_fields(
                    self.db, ro["id"], [RolloutState.RUNNING], next_wave_at=due, updated_at=now
                )
                await self._publish(ro["id"])
            if now < due:
                return float(due)
        await self._start_wave(ro, ro["wave"] + 1, now)
        return None

    async def _start_wave(self, ro: dict[str, Any], wave: int, now: float) -> None:
        wanted = [h["host_id"] for h in await store.hosts(self.db, ro["id"], wave)]
        known = {h["id"]: h for h in await host_store.get_many(self.db, wanted)}
        kind = CommandKind(ro["kind"])
        # A host removed since is not started; each gets its own or the fleet's default gate.
        rows = [
            self.fleet.new_command(
                ro["actor"], i, kind, now, self.fleet.gate_for(kind, known[i], None, False)
            )
            for i in wanted
            if i in known
        ]
        superseded = await store.start_wave(self.db, ro["id"], wave, rows, now)
        if superseded is None:
            return  # started already, here before a restart or by another replica
        log.info("rollouts: %s: wave %d of %d started", ro["id"], wave + 1, ro["waves"])
        changed = await command_store.get_many(self.db, [*superseded, *(r["id"] for r in rows)])
        await self._announce(changed)
        await self._publish(ro["id"])

    async def _finish(self, ro: dict[str, Any], to: RolloutState, reason: str = "") -> bool:
        """End a rollout: store the state, cancel what is still queued, report; once."""
        now = self.clock()
        ended = {"finished_at": now, "updated_at": now, "next_wave_at": None}
        if not await store.move(
            self.db, ro["id"], rules.sources(to), to, **ended, reason=reason[:200]
        ):
            return False
        if to != RolloutState.COMPLETED:
            detail = f"cancelled: rollout {to.value}"
            cancelled = await store.cancel_queued(self.db, ro["id"], now, detail)
            await self._announce(await command_store.get_many(self.db, cancelled))
        view = await self.view(ro["id"])
        if any(view["counts"].get(o.value) for o in rules.PENDING):
            self._settling.add(ro["id"])  # the report is final once they end (tick)
        else:
            await store.set_fields(self.db, ro["id"], [to], report=view["report"])
        await self._publish(ro["id"])
        self.notify({k: v for k, v in view.items() if k != "waves"})
        log.info("rollouts: %s %s: %s", ro["id"], to.value, view["report"])
        return True

    # --- operator actions -----------------------------------------------------------------
    async def pause(self, rollout_id: str) -> dict[str, Any]:
        return await self._act(rollout_id, RolloutState.PAUSED)

    async def resume(self, rollout_id: str) -> dict[str, Any]:
        view = await self._act(rollout_id, RolloutState.RUNNING)
        self._wake.set()
        return view

    async def abort(self, rollout_id: str) -> dict[str, Any]:
        """Abort: no further wave starts, queued hosts are cancelled, running ones finish."""
        async with self._lock(rollout_id):
            ro = await store.get(self.db, rollout_id)
            if not await self._finish(ro, RolloutState.ABORTED, "aborted by an operator"):
                raise Conflict(f"rollouts: this rollout is {ro['state']}; it cannot be aborted")
        return await self.view(rollout_id)

    async def _act(self, rollout_id: str, to: RolloutState) -> dict[str, Any]:
        async with self._lock(rollout_id):
            ro = await store.get(self.db, rollout_id)
            moved = await store.move(
                self.db, rollout_id, rules.sources(to), to, updated_at=self.clock()
            )
            if not moved:
                raise Conflict(f"rollouts: this rollout is {ro['state']}; it cannot be {to.value}")
            await self._publish(rollout_id)
        return await self.view(rollout_id)

    # --- reading ----------------------------------------------------------------------------
    async def view(self, rollout_id: str) -> dict[str, Any]:
        """Return the rollout with each wave, each host's outcome, counts and the report."""
        ro = await store.get(self.db, rollout_id)
        state = RolloutState(ro["state"])
        is_open = state not in rules.FINAL
        waves: list[dict[str, Any]] = [{"index": i, "hosts": []} for i in range(ro["waves"])]
        outcomes: list[tuple[Outcome, str]] = []
        for row in await store.hosts(self.db, rollout_id):
            outcome, detail = _outcome(row, is_open)
            outcomes.append((outcome, detail))
            waves[row["wave"]]["hosts"].append(
                {
                    "host_id": row["host_id"],
                    "outcome": outcome.value,
                    "command_id": row["command_id"],
                    "detail": detail,
                    "started_at": row["started_at"],
                    "finished_at": row["finished_at"],
                }
            )
        for wave in waves:
            wave["state"] = _wave_state(wave, ro["wave"], state)
        return {**_summarise(ro, outcomes), "waves": waves}

    async def summary(self, rollout_id: str) -> dict[str, Any]:
        """Return the rollout without per-host rows (for lists and live events): the same
        counts and report as view, from a count per state and the failures' rows."""
        ro = await store.get(self.db, rollout_id)
        is_open = RolloutState(ro["state"]) not in rules.FINAL
        by_state, failures = await store.tally(self.db, rollout_id)
        outcomes = [_outcome(row, is_open) for row in failures]
        listed = Counter(row["state"] for row in failures)
        for command_state, n in by_state.items():
            plain = rules.outcome_of(command_state, is_open)
            outcomes += [(plain, "")] * (n - listed[command_state])
        return _summarise(ro, outcomes)

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        return [await self.summary(r["id"]) for r in await store.recent(self.db, limit)]

    async def _announce(self, commands: Iterable[dict[str, Any]]) -> None:
        # Together, not one after the other: on PostgreSQL each publish waits for a journal
        # commit, so a wave of 1,000 announced one by one took about 10 s.
        await asyncio.gather(
            *(self.bus.publish({"type": "command", "command": c}) for c in commands)
        )

    async def _publish(self, rollout_id: str) -> None:
        summary = await self.summary(rollout_id)
        if RolloutState(summary["state"]) not in rules.FINAL or rollout_id in self._settling:
            self._announced[rollout_id] = _key(summary)  # the next tick need not say it again
            self._announced_at[rollout_id] = self.clock()
        await self.bus.publish({"type": "rollout", "rollout": summary})


def _key(summary: dict[str, Any]) -> tuple[Any, ...]:
    """Return what a rollout event is worth sending again for: its state and counts."""
    return (summary["state"], tuple(sorted(summary["counts"].items())))


def _outcome(row: dict[str, Any], is_open: bool) -> tuple[Outcome, str]:
    """Return a host's outcome and its detail for people (a bare failure: its exit code)."""
    outcome = rules.outcome_of(row["state"], is_open)
    detail = row["detail"] or ""
    if outcome in rules.FAILURES and not detail and row["exit_code"] is not None:
        detail = f"exit {row['exit_code']}"
    return outcome, detail


def _summarise(ro: dict[str, Any], outcomes: list[tuple[Outcome, str]]) -> dict[str, Any]:
    """Return the rollout row with its counts and its report (the stored one once final)."""
    state = RolloutState(ro["state"])
    counts = Counter(o.value for o, _ in outcomes)
    return {
        **ro,
        "wave_count": ro["waves"],
        "counts": {"total": len(outcomes), **counts},
        "report": ro["report"] or rules.report(outcomes, state, ro["reason"]),
    }


def _wave_state(wave: dict[str, Any], current: int, state: RolloutState) -> str:
    """Return a wave's state for people: waiting, active, passed, failed or not started."""
    outcomes = [Outcome(h["outcome"]) for h in wave["hosts"]]
    if wave["index"] > current:
        return "waiting" if state not in rules.FINAL else "not started"
    if any(o in rules.PENDING for o in outcomes):
        return "active"
    return "failed" if any(o in rules.FAILURES for o in outcomes) else "passed"
