"""The fleet manager: glues the rules in core, the storage and the event bus.

Every change follows one order: decide (core) → store → publish. A browser or another
replica only ever learns about a state that is already on disk.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from nixfleet.config import Settings
from nixfleet.core import commands as rules
from nixfleet.core import guards
from nixfleet.core import labels as label_rules
from nixfleet.core.commands import ACTIVE_STATES, DEPLOYING, CommandKind, CommandState
from nixfleet.core.drift import (
    DeployState,
    bulk_plan_summary,
    commit_drift,
    deploy_state,
    lock_age_days,
    plan_summary,
    reboot_state,
)
from nixfleet.core.errors import (
    Conflict,
    NixFleetError,
    NotFound,
    ValidationError,
    for_people,
)
from nixfleet.core.framing import CLOSE_REPLACED
from nixfleet.core.gates import HealthGate, choose_gate
from nixfleet.core.generations import check_rollback_target
from nixfleet.core.hostid import canonical_host_id
from nixfleet.core.protocol import (
    Finished,
    Hello,
    HostMeta,
    HostStatus,
    Output,
    Started,
    TransportReport,
    Warning,
    salvage,
)
from nixfleet.dashboard.fleet.ancestry import Ancestry
from nixfleet.dashboard.fleet.heartbeats import Reports, StatusWriter
from nixfleet.dashboard.fleet.identity import AgentIdentity
from nixfleet.dashboard.fleet.samples import Samples
from nixfleet.storage import changes
from nixfleet.storage import commands as command_store
from nixfleet.storage import host_states as state_store
from nixfleet.storage import hosts as host_store
from nixfleet.storage import output as output_store
from nixfleet.storage.bus import Event, EventBus
from nixfleet.storage.db import Database

log = logging.getLogger("nixfleet.fleet")

HOST_META_FIELDS = ("location", "device_type", "theme_color")
RECONNECT_WINDOW_S = 3600  # "reconnects in the last hour" in the host row
# Lines of output in GET /api/commands/{id}; the rest is paged (output_page).
OUTPUT_PAGE_LINES = 5000
PRUNE_OUTPUT_EVERY_S = 3600.0
TARGET_RECHECK_S = 1.0  # the soonest a finished deploy makes the target be read again


class Fleet:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        bus: EventBus,
        clock: Callable[[], float] = time.time,
        replica: str = "",
    ) -> None:
        self.settings = settings
        self.db = db
        self.bus = bus
        self.clock = clock
        # This process's id among the replicas sharing the database ("" when alone).
        self.replica = replica
        self.target: str | None = None
        self._target_checked = 0.0
        self.identity = AgentIdentity(settings, db, bus, clock)
        # Called with each command that reached its final state here (metrics); must not block.
        self.finished_hooks: list[Callable[[dict[str, Any]], None]] = []
        self.samples = Samples()
        # Which metadata fields each host's own configuration set in its last hello (the
        # host page says where a value came from). Memory only: every agent says hello again
        # when a dashboard starts, so the answer is back within a reconnect.
        self._meta_from_host: dict[str, frozenset[str]] = {}
        self._known_ids: set[str] | None = None  # host rows seen by the last sweep
        self._hosts_seen: int | None = None  # the hosts' change counter at that sweep
        self._statuses = StatusWriter(
            lambda group: host_store.save_statuses(db, group), self._announce_statuses
        )
        self.ancestry = Ancestry(
            settings.config_repo, settings.config_branch, settings.data_dir / "config-mirror.git"
        )
        self._output_pruned_at = 0.0
        # The last state of each field of each host this process recorded (_track_states).
        self._states: dict[str, dict[str, tuple[str, str]]] = {}

    async def startup(self) -> None:
        """Mark every host offline and open the reconnect window of their active commands
        (no agent can be connected before we listen)."""
        await host_store.mark_all_offline(self.db)
        opened = await command_store.open_reconnect_windows(self.db, self.clock())
        if opened:
            log.info(
                "fleet: %d active commands wait up to %g s for their agents",
                opened,
                self.settings.reconnect_window_s,
            )

    # --- hosts ----------------------------------------------------------------------
    async def add_host(
        self, raw_id: str, meta: dict[str, str], labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Return the new host. It has no agent token yet: issue an enrollment code
        (identity.issue_enroll_code) or a token (rotate_token) next."""
        host_id = canonical_host_id(raw_id)
        clean: dict[str, Any] = {k: v for k, v in meta.items() if k in HOST_META_FIELDS}
        if labels:
            clean["labels"] = label_rules.check_labels(labels)
        await host_store.add(self.db, host_id, None, self.clock(), clean)
        host = await self.host(host_id)
        await self.bus.publish({"type": "host", "host": host})
        return host

    async def remove_host(self, raw_id: str) -> None:
        host_id = canonical_host_id(raw_id)
        await host_store.remove(self.db, host_id)
        self.samples.forget(host_id)
        self._states.pop(host_id, None)
        await self.bus.publish({"type": "host_removed", "host_id": host_id})
        await self.bus.publish({"type": "agent_control", "host_id": host_id, "action": "drop"})

    async def rotate_token(self, raw_id: str, overlap_s: int | None = None) -> str:
        """Return a new agent token for the host (see AgentIdentity.rotate)."""
        token = await self.identity.rotate(raw_id, overlap_s)
        await self.publish_host(canonical_host_id(raw_id))
        return token

    async def revoke_token(self, raw_id: str) -> None:
        await self.identity.revoke(raw_id)
        await self.publish_host(canonical_host_id(raw_id))

    async def set_labels(self, raw_id: str, labels: dict[str, str]) -> dict[str, Any]:
        """Replace the operator's labels of a host (a key its configuration sets still
        wins) and return the host."""
        host_id = canonical_host_id(raw_id)
        clean = label_rules.check_labels(labels)
        await host_store.set_labels(self.db, host_id, "labels", clean)
        host = await self.host(host_id)
        await self.bus.publish({"type": "host", "host": host})
        return host

    async def edit_labels(
        self, raw_id: str, set_: dict[str, str], remove: Collection[str]
    ) -> dict[str, Any]:
        """Set and remove some of the operator's labels of a host; return the host."""
        host = await host_store.get(self.db, canonical_host_id(raw_id))
        current, _ = label_rules.merged(host.get("labels"), None)
        for key in remove:
            current.pop(key, None)
        return await self.set_labels(host["id"], current | set_)

    async def select(self, selector: str) -> list[str]:
        """Return the ids of the hosts whose labels match selector (`role=web,tier=1`)."""
        terms = label_rules.parse_selector(selector)
        rows = await host_store.list_all(self.db)
        picked = [
            r["id"]
            for r in rows
            if label_rules.matches(
                label_rules.merged(r.get("labels"), r.get("host_labels"))[0], terms
            )
        ]
        if not picked:
            raise NotFound(f"fleet: no host has the labels {selector[:100]!r}")
        return picked

    async def publish_host(self, host_id: str) -> None:
        try:
            await self.bus.publish({"type": "host", "host": await self.host(host_id)})
        except NotFound:
            pass  # removed meanwhile

    async def publish_hosts(self, host_ids: list[str]) -> None:
        """Announce many hosts with one read (hosts removed meanwhile are left out)."""
        views = await self.views(await host_store.get_many(self.db, host_ids))
        await self._publish_all({"type": "host", "host": h} for h in views)

    async def host(self, host_id: str) -> dict[str, Any]:
        return (await self.views([await host_store.get(self.db, host_id)]))[0]

    async def hosts(self) -> list[dict[str, Any]]:
        return await self.views(await host_store.list_all(self.db))

    async def fleet_view(
        self, states: list[str], only: Collection[str] = (), label: str = ""
    ) -> dict[str, Any]:
        """Return the hosts in any of states (all when none), counts per state, plan summary.

        A state is a deploy state (current, behind, diverged, never_deployed, unknown,
        failed) or one of online, offline, running, reboot. With only, the list and the
        plan summary are those hosts' (a bulk preview's selection); with label, those whose
        labels match that selector; counts stay the fleet's.
        """
        terms = label_rules.parse_selector(label) if label else []
        bad = sorted(set(states) - HOST_FILTERS)
        if bad:
            raise ValidationError(
                f"unknown state {bad[0][:40]!r}; accepted: {', '.join(sorted(HOST_FILTERS))}"
            )
        hosts = await self.hosts()
        running = await command_store.busy_hosts(self.db, [h["id"] for h in hosts])
        tags = {h["id"]: _tags(h, h["id"] in running) for h in hosts}
        counts = {k: sum(k in t for t in tags.values()) for k in _COUNTED}
        if states:
            hosts = [h for h in hosts if tags[h["id"]] & set(states)]
        if only:
            wanted = set(only)
            hosts = [h for h in hosts if h["id"] in wanted]
        if terms:
            hosts = [h for h in hosts if label_rules.matches(h["labels"], terms)]
        plans = [h["plan"] for h in hosts if h["plan"] and not h["plan"]["expired"]]
        return {
            "hosts": hosts,
            "target": self.target,
            "counts": counts,
            "plan_summary": bulk_plan_summary(plans) if plans else None,
        }

    async def deploy_counts(self) -> dict[str, int]:
        """Return how many hosts of the fleet are in each deploy state (all states named)."""
        counts = dict.fromkeys((s.value for s in DeployState), 0)
        for host in await self.hosts():
            counts[host["deploy"]["state"]] += 1
        return counts

    async def views(
        self, rows: list[dict[str, Any]], reported: bool = False
    ) -> list[dict[str, Any]]:
        """Return host_view of each row, once the ancestry of their deployed commits is known."""
        deployed = ((r.get("status") or {}).get("deployed_commit", "") for r in rows)
        await self.ancestry.prepare(deployed, self.target)
        return [self.host_view(r, reported) for r in rows]

    def host_view(self, row: dict[str, Any], reported: bool = False) -> dict[str, Any]:
        """Return a host row with what is derived from it: deploy state, reboot, plan, health.

        The stored status is read through today's bounds, so a row written before them
        (a 400-digit number, NaN) cannot break the host list or the event stream. With
        reported, the row's status is one an agent just sent (a HostStatus, checked on
        arrival, dumped), which those bounds would give back unchanged.
        """
        status = row.get("status")
        st = (status if reported else salvage(HostStatus, status).model_dump()) if status else {}
        link = row.get("connection") or {}
        now = self.clock()
        deploy = self._deploy_view(row, st)
        reboot = reboot_state(st.get("os_kind", ""), st)
        labels, label_sources = label_rules.merged(row.get("labels"), row.get("host_labels"))
        return {
            **row,
            "status": st or None,
            "deploy": deploy,
            "reboot": reboot,
            "plan": _plan_view(row.get("plan"), self.target, st.get("current_system", "")),
            # Kept for older clients: both now come from what is deployed, not checked out.
            "drift": commit_drift(deploy["deployed_commit"] or "", self.target).value,
            "reboot_needed": reboot["needed"] is True,
            "lock_age_days": lock_age_days(st.get("lock_modified"), now),
            "labels": labels,
            "admin_labels": label_rules.merged(row.get("labels"), None)[0],
            "label_sources": label_sources,
            "meta_sources": self._meta_sources(row)
            | {f"labels.{k}": v for k, v in label_sources.items()},
            "connection": {
                "connected_since": row.get("connected_at") if row.get("online") else None,
                "reconnects_1h": sum(
                    1 for t in link.get("reconnects", []) if t > now - RECONNECT_WINDOW_S
                ),
                "breaker": link.get("breaker"),
                "tls_failure": link.get("tls_failure"),
            },
        }

    def _deploy_view(self, row: dict[str, Any], st: dict[str, Any]) -> dict[str, Any]:
        """Return the host's deployed commit, checkout, generation, last deploy and state."""
        last = _latest(row.get("last_deploy"), st.get("last_deploy"))
        deployed = st.get("deployed_commit") or None
        state = deploy_state(
            deployed or "",
            bool(st.get("has_deployed")) or last is not None,
            self.target,
            last["result"] if last else None,
            self.ancestry.get,
        )
        if not st:
            state = DeployState.UNKNOWN  # the agent never reported
        return {
            "state": state.value,
            "deployed_commit": deployed,
            "checked_out_commit": st.get("commit") or None,
            "target_commit": self.target,
            "generation": st.get("generation"),
            "system": st.get("current_system") or None,
            "last": last,
            # What the host's next switch carries unless it asks otherwise, and from where.
            "gate": self._default_gate(row),
        }

    def _default_gate(self, row: dict[str, Any]) -> dict[str, Any] | None:
        own = stored_gate(row.get("health_gate"))
        gate = own or self.settings.health_gate
        if gate is None:
            return None
        return {**gate.model_dump(), "source": "host" if own else "fleet"}

    def _meta_sources(self, row: dict[str, Any]) -> dict[str, str]:
        """Return who set each metadata field that has a value: the host or an operator."""
        from_host = self._meta_from_host.get(row["id"])
        if from_host is None:
            return {}  # not known until the agent's hello (after a dashboard restart)
        return {
            k: "host configuration" if k in from_host else "dashboard"
            for k in HOST_META_FIELDS
            if row.get(k)
        }

    # --- commands -------------------------------------------------------------------
    def new_command(
        self,
        actor: str,
        host_id: str,
        kind: CommandKind,
        now: float,
        gate: HealthGate | None = None,
    ) -> dict[str, Any]:
        """Return the row of a new queued command (it expires after NIXFLEET_COMMAND_EXPIRY_S)."""
        return {
            "gate": gate.model_dump() if gate is not None else None,
            "id": uuid.uuid4().hex,
            "host_id": host_id,
            "kind": kind.value,
            "state": CommandState.QUEUED.value,
            "actor": actor,
            "created_at": now,
            "expires_at": now + self.settings.command_expiry_s,
        }

    def gate_for(
        self, kind: CommandKind, host: dict[str, Any], gate: HealthGate | None, off: bool
    ) -> HealthGate | None:
        """Return the gate a new command of kind for host carries (core.gates.choose_gate)."""
        return choose_gate(
            kind.value, gate, off, stored_gate(host.get("health_gate")), self.settings.health_gate
        )

    async def dispatch(
        self,
        actor: str,
        raw_id: str,
        raw_kind: object,
        force: bool = False,
        gate: HealthGate | None = None,
        no_gate: bool = False,
        generation: int | None = None,
    ) -> dict[str, Any]:
        """Return the stored command for kind on host, queued or acted on at once.

        1. Validate kind, gate, a rollback's generation and host (nothing is written for
           bad input); refuse a host no agent can receive it on, and a deploy while one
           is active (unless `force`).
        2. stop: ask the agent to cancel its active command; restart: send straight away.
        3. Other kinds are queued (superseding an older queued switch) and the hub
           delivers them when the host is free.
        """
        kind = rules.parse_kind(raw_kind)
        host, active = await command_store.host_and_active(self.db, canonical_host_id(raw_id))
        host_id = host["id"]
        chosen = self.gate_for(kind, host, gate, no_gate)
        if generation is not None:
            _check_generation(host, kind, generation)
        guards.check_deliverable(host)
        now = self.clock()
        guards.check_second_deploy(kind.value, active, force)
        if kind == CommandKind.STOP:
            rules.check_stop_allowed(bool(active))
        elif kind == CommandKind.RESTART and not host["online"]:
            raise Conflict(f"commands: {host_id} is offline; restart needs a connected agent")
        row = self.new_command(actor, host_id, kind, now, chosen) | {"generation": generation}
        if kind == CommandKind.STOP:
            # A stop is never queued: it is recorded as done and acts on the active command.
            row |= {
                "state": CommandState.SUCCEEDED.value,
                "finished_at": now,
                "detail": f"stop requested for {active[0]['id']}",
            }
        stored, superseded = await command_store.queue(
            self.db, row, supersede=rules.supersedes_queued(kind)
        )
        for cmd in superseded:
            await self.bus.publish({"type": "command", "command": cmd})
        if kind == CommandKind.STOP:
            await self.bus.publish(
                {
                    "type": "agent_control",
                    "host_id": host_id,
                    "action": "cancel",
                    "command_id": active[0]["id"],
                }
            )
        await self.bus.publish({"type": "command", "command": stored})
        return stored

    async def dispatch_many(
        self, actor: str, raw_ids: Collection[str], raw_kind: object
    ) -> list[dict[str, Any]]:
        """Return one result per host: its queued command, or the error that host got.

        1. stop and restart depend on each host's live state: they go through `dispatch`.
        2. Other kinds: every valid, known host gets its own queued command, all inserted
           in one transaction (superseding each host's older queued switch), then announced.
           A bad or unknown host fails alone.
        """
        kind_error: NixFleetError | None = None
        try:
            kind = rules.parse_kind(raw_kind)
        except NixFleetError as exc:
            kind_error = exc
        results: dict[str, dict[str, Any]] = {}
        wanted: list[str] = []
        for raw in dict.fromkeys(raw_ids):
            try:
                if kind_error is not None:
                    raise kind_error
                host_id = canonical_host_id(raw)
                if kind in (CommandKind.STOP, CommandKind.RESTART):
                    results[raw] = _queued(await self.dispatch(actor, host_id, kind))
                else:
                    wanted.append(host_id)
            except NixFleetError as exc:
                results[raw] = {
                    "host_id": raw[:63],
                    "error": exc.code,
                    "detail": for_people(str(exc)),
                }
        queued = await self._enqueue_many(actor, wanted, kind) if wanted else {}
        for raw in dict.fromkeys(raw_ids):
            if raw in results:
                continue
            host_id = canonical_host_id(raw)
            results[raw] = queued.get(host_id) or {
                "host_id": raw[:63],
                "error": "not_found",
                "detail": f"There is no host {host_id!r}: check the name.",
            }
        return list(results.values())

    async def _enqueue_many(
        self, actor: str, host_ids: list[str], kind: CommandKind
    ) -> dict[str, dict[str, Any]]:
        """Return {host id: result} for the known hosts among host_ids, each now queued;
        a host no agent could receive it on gets its refusal instead."""
        hosts = {h["id"]: h for h in await host_store.get_many(self.db, host_ids)}
        refused = {i: r for i, h in hosts.items() if (r := guards.undeliverable(h))}
        known = set(hosts) - set(refused)
        now = self.clock()
        rows = [
            self.new_command(
                actor, host_id, kind, now, self.gate_for(kind, hosts[host_id], None, False)
            )
            for host_id in dict.fromkeys(host_ids)
            if host_id in known
        ]
        superseded = await command_store.enqueue_many(
            self.db, rows, supersede=rules.supersedes_queued(kind)
        )
        changed = await command_store.get_many(self.db, [*superseded, *(r["id"] for r in rows)])
        await self._publish_all({"type": "command", "command": cmd} for cmd in changed)
        out = {h: _refusal(h, guards.NotEnrolled.code, r) for h, r in refused.items()}
        return out | {r["host_id"]: _queued(r) for r in rows}

    async def cancel_queued(self, command_id: str) -> dict[str, Any]:
        """Cancel a command that has not been delivered yet, or raise Conflict."""
        cmd = await command_store.get(self.db, command_id)
        cancelled = await command_store.moved(
            self.db,
            command_id,
            cmd["host_id"],
            [CommandState.QUEUED],
            CommandState.CANCELLED,
            finished_at=self.clock(),
            detail="cancelled while queued",
        )
        if cancelled is None:
            raise Conflict(f"commands: {command_id} is {cmd['state']}, not queued; use stop")
        await self.bus.publish({"type": "command", "command": cancelled})
        return cancelled

    async def set_health_gate(self, raw_id: str, gate: HealthGate | None) -> dict[str, Any]:
        """Return the host after storing its default gate (None: the fleet's default)."""
        host_id = canonical_host_id(raw_id)
        await host_store.set_health_gate(
            self.db, host_id, gate.model_dump() if gate is not None else None
        )
        host = await self.host(host_id)
        await self.bus.publish({"type": "host", "host": host})
        return host

    async def host_commands(self, raw_id: str, limit: int = 50) -> list[dict[str, Any]]:
        host_id = canonical_host_id(raw_id)
        await host_store.get(self.db, host_id)
        return await command_store.for_host(self.db, host_id, limit=limit)

    async def claim_many(self, host_ids: Collection[str]) -> list[dict[str, Any]]:
        """Return the commands to send now, at most one per host, already marked dispatched.

        1. Read these hosts' queued, unexpired commands and which hosts have one active.
        2. Per host: a command that runs no process (restart) jumps the line; other work
           goes only to a host with nothing active, oldest first.
        3. Claim the picks with one guarded UPDATE (`… AND state = 'queued'`), so a command
           another replica claimed first is left out; announce what was claimed.
        """
        claimed = await command_store.claim_next(
            self.db, list(host_ids), self.clock(), _picks, holder=self.replica or None
        )
        await self._publish_all({"type": "command", "command": cmd} for cmd in claimed)
        return claimed

    async def unclaim(self, host_id: str, command_id: str) -> None:
        """Put a dispatched command that never left this process back in the queue."""
        cmd = await command_store.moved(
            self.db,
            command_id,
            host_id,
            [CommandState.DISPATCHED],
            CommandState.QUEUED,
            dispatched_at=None,
        )
        if cmd is not None:
            await self.bus.publish({"type": "command", "command": cmd})

    async def _publish_views(self, hosts: list[dict[str, Any]]) -> None:
        """Record the hosts' state changes (their history), then announce the hosts."""
        await self._track_states(hosts)
        await self._publish_all({"type": "host", "host": h} for h in hosts)

    async def _track_states(self, hosts: list[dict[str, Any]]) -> None:
        """Store each field (online, deploy state, reboot) of these host views that changed
        since the last one this process saw or the newest stored one.

        Only settled states are history. While a switch, pull-switch or rollback runs, and
        until the host reports after it, the deploy state and the reboot need come from a
        host between two systems: a checkout that moved before the switch, a system
        activated before the agent noted its commit. They read "diverged" or "unknown"
        for a moment, which an operator would take for trouble; so those two fields wait
        for the outcome (storage.host_states.settling), and the outcome is what is stored.
        A connection change is stored as it comes: a host that drops mid-deploy did drop.
        """
        unknown = [h["id"] for h in hosts if h["id"] not in self._states]
        stored = await state_store.latest(self.db, unknown)
        for host_id in unknown:
            self._states[host_id] = {f: v for (h, f), v in stored.items() if h == host_id}
        changed = [
            (host["id"], field, (value, detail[:200]))
            for host in hosts
            for field, value, detail in _state_fields(host)
            if self._states[host["id"]].get(field) != (value, detail[:200])
        ]
        waiting = {h for h, field, _ in changed if field in _OUTCOME_FIELDS}
        settling = await state_store.settling(self.db, waiting) if waiting else set()
        now = self.clock()
        rows = []
        for host_id, field, (value, detail) in changed:
            if field in _OUTCOME_FIELDS and host_id in settling:
                continue  # not remembered either: the next view after the outcome stores it
            self._states[host_id][field] = (value, detail)
            rows.append(
                {"host_id": host_id, "at": now, "field": field, "value": value, "detail": detail}
            )
        if not await state_store.record(self.db, rows):
            # A host removed meanwhile: its history went with it.
            for host in hosts:
                self._states.pop(host["id"], None)

    async def state_history(self, raw_id: str, limit: int) -> list[dict[str, Any]]:
        """Return the host's newest state changes, newest first (NotFound for no host)."""
        host_id = canonical_host_id(raw_id)
        await host_store.get(self.db, host_id)
        return await state_store.for_host(self.db, host_id, limit)

    async def _publish_all(self, events: Iterable[Event]) -> None:
        # Together, not one after the other: a bus that journals events for other replicas
        # writes them in one transaction instead of one each. One event (a claim, a
        # finished command) is awaited as it is: gather would make it a task of its own.
        many = list(events)
        if len(many) == 1:
            await self.bus.publish(many[0])
        else:
            await asyncio.gather(*(self.bus.publish(e) for e in many))

    async def _publish_command(self, command_id: str) -> dict[str, Any]:
        cmd = await command_store.get(self.db, command_id)
        await self.bus.publish({"type": "command", "command": cmd})
        return cmd

    # --- what agents tell us --------------------------------------------------------
    async def agent_connected(self, host_id: str, hello: Hello) -> None:
        """Record the connection and reconcile the host's active commands with the agent.

        1. Commands the agent knows stay active; their reconnect window closes.
        2. Dispatched commands it does not know never arrived: queue them again.
        3. Running commands it does not know are lost (the agent lost its journal).
        """
        now = self.clock()
        # One owner per field: what the host's own configuration sets wins; a field it
        # leaves empty stays as an operator entered it in the dashboard. The host's
        # configuration owns its whole label set: a label it dropped goes.
        fields = _set_fields(hello.meta) if hello.meta is not None else {}
        await host_store.mark_connected(
            self.db,
            host_id,
            hello.status.model_dump(),
            now,
            self.replica or None,
            link=_link_report(hello.transport, now),
            window_s=RECONNECT_WINDOW_S,
            fields=fields,
            host_labels=dict(hello.meta.labels) if hello.meta is not None else None,
        )
        self._meta_from_host[host_id] = frozenset(fields)
        if not self.db.is_sqlite:
            # Another replica may still hold a stale link to this agent: it lets go.
            await self.bus.publish(
                {
                    "type": "agent_control",
                    "host_id": host_id,
                    "action": "drop",
                    "code": CLOSE_REPLACED,
                    "reason": "a newer connection for this host arrived",
                    "keep": self.replica,
                }
            )
        known = set(hello.known_commands)
        for cmd in await command_store.for_host(self.db, host_id, ACTIVE_STATES, limit=100):
            if cmd["id"] in known:
                await command_store.set_fields(self.db, cmd["id"], host_id, disconnected_at=None)
                continue
            if cmd["state"] == CommandState.DISPATCHED:
                await command_store.move(
                    self.db,
                    cmd["id"],
                    host_id,
                    [CommandState.DISPATCHED],
                    CommandState.QUEUED,
                    dispatched_at=None,
                    disconnected_at=None,
                )
            else:
                await command_store.move(
                    self.db,
                    cmd["id"],
                    host_id,
                    [CommandState.RUNNING],
                    CommandState.LOST,
                    finished_at=now,
                    detail="the agent came back without a record of it",
                )
            await self._publish_command(cmd["id"])
        await self._publish_views([await self.host(host_id)])

    async def agent_disconnected(self, host_id: str) -> None:
        now = self.clock()
        # The host goes offline and its commands enter the reconnect window together.
        if not await host_store.mark_disconnected(self.db, host_id, now, self.replica or None):
            return  # the agent is connected to another replica now
        try:
            await self._publish_views([await self.host(host_id)])
        except NotFound:
            pass  # removed while connected

    async def record_status(self, host_id: str, status: HostStatus, wait: bool = False) -> None:
        """Queue a heartbeat for the next group write; with wait, return once it is stored."""
        await self._statuses.save(host_id, status.model_dump(), self.clock(), wait)

    async def _announce_statuses(self, group: Reports) -> None:
        for host_id, (status, at) in group.items():
            self.samples.record(host_id, status, at)
        # The statuses as they were stored (each a HostStatus's dump), not read back.
        reported = {host_id: status for host_id, (status, _) in group.items()}
        rows = await host_store.get_many_reported(self.db, reported)
        await self._publish_views(await self.views(rows, reported=True))

    async def record_started(self, host_id: str, msg: Started) -> None:
        cmd = await command_store.moved(
            self.db,
            msg.command_id,
            host_id,
            [CommandState.DISPATCHED],
            CommandState.RUNNING,
            started_at=msg.started_at,
        )
        if cmd is not None:
            await self.bus.publish({"type": "command", "command": cmd})

    async def record_output(self, host_id: str, msg: Output) -> int:
        """Store a batch of lines and return the sequence number to acknowledge.

        1. Output of a final command is acknowledged and dropped: a final record is
           final. `lost` is the exception, since the true result (and its output) of an
           agent that came back late still replaces it.
        2. What fits the command's quota is stored (storage.output), then published.
        """
        cmd = await command_store.get(self.db, msg.command_id)
        if cmd["host_id"] != host_id:
            raise NotFound(f"fleet: command {msg.command_id} is not {host_id}'s")
        acked = max((ln.seq for ln in msg.lines), default=0)
        state = CommandState(cmd["state"])
        if state not in ACTIVE_STATES and state != CommandState.LOST:
            return acked
        if state == CommandState.DISPATCHED:
            # Output proves it started even if the `started` message died with a dashboard.
            await self.record_started(
                host_id, Started(command_id=msg.command_id, started_at=self.clock())
            )
        lines, truncated = await output_store.append(
            self.db,
            msg.command_id,
            [ln.model_dump() for ln in msg.lines],
            self.clock(),
            self.settings.output_max_bytes,
        )
        announce = lines or await self._replayed(msg)
        if announce:
            await self.bus.publish(
                {
                    "type": "output",
                    "command_id": msg.command_id,
                    "host_id": host_id,
                    "lines": announce,
                }
            )
        if lines and truncated:
            log.warning(
                "fleet: output of %s on %s reached %d bytes; the rest is dropped",
                msg.command_id,
                host_id,
                self.settings.output_max_bytes,
            )
            await self._publish_command(msg.command_id)
        return acked

    async def _replayed(self, msg: Output) -> list[dict[str, Any]]:
        """Return the stored lines of a batch that was stored before, to announce again.

        With replicas, the one that stored them may have died before announcing them; the
        agent replays them here, and the browsers that never saw them would keep a gap.
        """
        if self.db.is_sqlite or not msg.lines:
            return []
        first = min(ln.seq for ln in msg.lines)
        return await output_store.lines(self.db, msg.command_id, first - 1, len(msg.lines))

    async def record_warning(self, host_id: str, msg: Warning) -> None:
        """Note the agent's warning (still running after …) on an active command only."""
        cmd = await command_store.set_fields(
            self.db, msg.command_id, host_id, ACTIVE_STATES, warned=True, detail=msg.text
        )
        if cmd is not None:
            await self.bus.publish({"type": "command", "command": cmd})

    async def record_finished(self, host_id: str, msg: Finished) -> None:
        """Store the final result; a replayed result for a finished command is a no-op."""
        state = CommandState.FAILED if msg.result == "rejected" else CommandState(msg.result)
        # A refusal is stored as failed; the detail says it never ran, and why.
        detail = f"rejected: {msg.detail}" if msg.result == "rejected" else msg.detail
        tests = [t.model_dump() for t in msg.tests] or None
        cmd = await command_store.moved(
            self.db,
            msg.command_id,
            host_id,
            [CommandState.DISPATCHED, CommandState.RUNNING, CommandState.LOST],
            state,
            finished_at=self.clock(),
            exit_code=msg.exit_code,
            detail=detail,
            tests=tests,
            disconnected_at=None,
            change=msg.change.model_dump() if msg.change is not None else None,
        )
        if cmd is None:
            return
        await self.bus.publish({"type": "command", "command": cmd})
        await self._notice_new_target(cmd, msg)
        for hook in self.finished_hooks:
            hook(cmd)
        row = await self._record_outcome(host_id, cmd, msg)
        if row is not None:
            await self._publish_views(await self.views([row]))
        if cmd["kind"] == CommandKind.TEST:
            summary = {
                "command_id": msg.command_id,
                "at": cmd["finished_at"],
                "passed": sum(t.ok for t in msg.tests),
                "total": len(msg.tests),
            }
            row = await host_store.save_last_test(self.db, host_id, summary)
            if row is not None:
                await self.bus.publish({"type": "host", "host": (await self.views([row]))[0]})

    async def _notice_new_target(self, cmd: dict[str, Any], msg: Finished) -> None:
        """Look for a new target now when a deploy landed on a commit other than the one
        this dashboard takes for it: most often the branch moved within the target cache,
        and the host would read "diverged" (in the table and its timeline) until then."""
        after = msg.change.after.commit if msg.change is not None else ""
        if cmd["kind"] in DEPLOYING and after and after != self.target:
            # At most once a second: a rollout onto another branch asks git once, not per host.
            await self.refresh_target(self.clock() - self._target_checked >= TARGET_RECHECK_S)

    async def _record_outcome(
        self, host_id: str, cmd: dict[str, Any], msg: Finished
    ) -> dict[str, Any] | None:
        """Keep a deploy's outcome and a plan's report on the host row; return the row as
        written if either was kept."""
        kind = CommandKind(cmd["kind"])
        if kind in DEPLOYING:
            last = {"command_id": cmd["id"], "result": cmd["state"]} | {
                k: cmd[k] for k in ("kind", "finished_at", "detail")
            }
            return await host_store.save_outcome(self.db, host_id, last_deploy=last)
        if kind != CommandKind.PLAN:
            return None
        plan: dict[str, Any] = {"command_id": cmd["id"], "finished_at": cmd["finished_at"]}
        if msg.plan is not None:
            plan |= msg.plan.model_dump()
        else:
            code = f" (exit {cmd['exit_code']})" if cmd.get("exit_code") is not None else ""
            error = cmd["detail"] or f"the build {cmd['state'].replace('_', ' ')}{code}"
            # The target it was asked for, so a failed plan expires like a good one.
            plan |= {"changed": False, "error": error, "target_commit": self.target or ""}
        return await host_store.save_outcome(self.db, host_id, plan=plan)

    # --- housekeeping ---------------------------------------------------------------
    async def sweep(self) -> None:
        """Expire queued commands, declare lost the ones whose host never came back."""
        now = self.clock()
        changed = await command_store.expire_queued(self.db, now)
        changed += await command_store.lose_abandoned(
            self.db, now - self.settings.reconnect_window_s, now
        )
        rows = await command_store.get_many(self.db, [r["id"] for r in changed])
        await self._publish_all({"type": "command", "command": cmd} for cmd in rows)
        await self.refresh_target()
        await self._notice_host_rows()

    async def _notice_host_rows(self) -> None:
        """Announce hosts added or removed by another process (the CLI writes the DB).
        The host ids are read only when the hosts' change counter moved."""
        seen = await changes.read(self.db, changes.HOSTS)
        if seen == self._hosts_seen:
            return
        self._hosts_seen = seen
        ids = await host_store.ids(self.db)
        known, self._known_ids = self._known_ids, ids
        if known is None:
            return
        # Every replica notices by itself: these stay in this process.
        for row in await host_store.get_many(self.db, sorted(ids - known)):
            await self.bus.publish({"type": "host", "host": self.host_view(row), "scope": "local"})
        for host_id in sorted(known - ids):
            self.samples.forget(host_id)
            await self.bus.publish({"type": "host_removed", "host_id": host_id, "scope": "local"})

    async def refresh_target(self, force: bool = False) -> str | None:
        """Return the fleet's target commit: the head of the configured branch (cached)."""
        repo = self.settings.config_repo
        now = self.clock()
        if not repo or (not force and now - self._target_checked < self.settings.target_cache_s):
            return self.target
        self._target_checked = now
        proc = await asyncio.create_subprocess_exec(
            "git",
            "ls-remote",
            "--",
            repo,
            f"refs/heads/{self.settings.config_branch}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        head = out.decode().split()[0] if proc.returncode == 0 and out.strip() else None
        if head != self.target:
            self.target = head
            # Every replica reads the target itself, so these stay in this process.
            await self.bus.publish({"type": "target", "commit": head, "scope": "local"})
            hosts = await self.hosts()
            await self._track_states(hosts)
            for host in hosts:
                await self.bus.publish({"type": "host", "host": host, "scope": "local"})
        return self.target

    async def snapshot(self) -> dict[str, Any]:
        """Return the full state a browser needs to draw the dashboard from scratch."""
        return {
            "target": self.target,
            "branch": self.settings.config_branch,
            "hosts": await self.hosts(),
            "commands": await command_store.recent(self.db, 200),
        }

    async def command_with_output(self, command_id: str) -> dict[str, Any]:
        """Return the command with its first page of output and the cursor to the next."""
        cmd = await command_store.get(self.db, command_id)
        page = await self.output_page(command_id, 0, OUTPUT_PAGE_LINES)
        return {**cmd, "output": page["lines"], "output_next": page["next"]}

    async def output_page(self, command_id: str, after_seq: int, limit: int) -> dict[str, Any]:
        """Return up to limit lines after after_seq, and `next`: the after_seq of the
        following page, or None when these are the last lines stored so far."""
        await command_store.get(self.db, command_id)  # NotFound for an unknown command
        rows = await output_store.lines(self.db, command_id, after_seq, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "command_id": command_id,
            "lines": rows,
            "next": rows[-1]["seq"] if more else None,
        }

    async def prune_output_if_due(self) -> int:
        """Delete the output of commands finished before the retention, and host state
        history older than its own, hourly."""
        now = self.clock()
        if now - self._output_pruned_at < PRUNE_OUTPUT_EVERY_S:
            return 0
        self._output_pruned_at = now
        states = await state_store.prune(self.db, now - self.settings.state_history_days * 86400)
        if states:
            log.info("fleet: removed %d host state changes past the retention", states)
        cutoff = now - self.settings.output_retention_days * 86400
        total = 0
        while pruned := await output_store.prune(self.db, cutoff):
            total += pruned
        if total:
            log.info("fleet: removed the output of %d commands past the retention", total)
        return total


def stored_gate(raw: object) -> HealthGate | None:
    """Return a stored gate, or None when there is none or it no longer fits today's bounds."""
    if not raw:
        return None
    try:
        return HealthGate.model_validate(raw)
    except PydanticValidationError:
        log.warning("fleet: a stored health gate no longer fits its bounds; ignoring it")
        return None


def _state_fields(host: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Return the (field, value, detail) of a host view that its state history follows.

    A host whose agent never reported has no history yet: "offline, unknown, no reboot
    needed" at the moment it is added would be the first three rows of every timeline and
    say nothing. Why no reboot is needed is no news either; only why one is.
    """
    if not host.get("status"):
        return []
    deployed = host["deploy"].get("deployed_commit") or ""
    out = [
        ("connection", "online" if host["online"] else "offline", ""),
        ("deploy", host["deploy"]["state"], deployed[:12]),
    ]
    if host["reboot"]["needed"] is not None:
        needed = host["reboot"]["needed"]
        reason = (host["reboot"].get("reason") or "") if needed else ""
        out.append(("reboot", "needed" if needed else "not needed", reason))
    return out


def _check_generation(host: dict[str, Any], kind: CommandKind, generation: int) -> None:
    """Refuse a generation for another kind than rollback, or one the host did not report."""
    if kind != CommandKind.ROLLBACK:
        raise ValidationError(
            f"commands: only a rollback takes a generation, not {kind.value}; leave it out"
        )
    st = salvage(HostStatus, host["status"]) if host.get("status") else HostStatus()
    check_rollback_target(host["id"], generation, [g.model_dump() for g in st.generations])


def _set_fields(meta: HostMeta) -> dict[str, str]:
    """Return the metadata fields the agent set (non-empty); the others are not its to blank."""
    return {k: v for k, v in meta.model_dump(exclude={"labels"}).items() if v}


def _link_report(report: TransportReport | None, now: float) -> dict[str, Any]:
    """Return what a hello says about the agent's way here, in the stored shape.

    Ages become dashboard timestamps here, so an agent's wrong clock cannot move them.
    """
    if report is None:
        return {"breaker": None}
    out: dict[str, Any] = {
        "breaker": {
            "state": report.breaker,
            "failed_attempts": report.failed_attempts,
            "down_s": report.down_s,
            "at": now,
        }
    }
    if report.tls_failures:
        latest = min(report.tls_failures, key=lambda f: f.age_s)
        out["tls_failure"] = {
            "kind": latest.kind,
            "count": latest.count,
            "at": now - latest.age_s,
            "kinds": {f.kind: f.count for f in report.tls_failures},
        }
    return out


# The state fields that wait for the outcome of a command changing the system (_track_states).
_OUTCOME_FIELDS = frozenset({"deploy", "reboot"})
_LAST_FIELDS = ("command_id", "kind", "result", "finished_at", "detail")
_COUNTED = ("online", "behind", "failed", "running", "reboot")
HOST_FILTERS = frozenset(
    {*(s.value for s in DeployState), "online", "offline", "running", "reboot"}
)


def _tags(host: dict[str, Any], running: bool) -> set[str]:
    """Return the states a host is in, for ?state= filters and the header's counts."""
    tags = {host["deploy"]["state"], "online" if host["online"] else "offline"}
    if running:
        tags.add("running")
    if host["reboot"]["needed"]:
        tags.add("reboot")
    return tags


def _latest(*outcomes: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the newest of the dashboard's and the agent's record of the last deploy."""
    known = [o for o in outcomes if o]
    if not known:
        return None
    last = max(known, key=lambda o: float(o.get("finished_at") or 0))
    return {k: last.get(k) for k in _LAST_FIELDS}


def _plan_view(
    plan: dict[str, Any] | None, target: str | None, current: str
) -> dict[str, Any] | None:
    """Return a stored plan as the API shows it; expired once the target or system moved."""
    if not plan:
        return None
    error = plan.get("error")
    changes = [
        {"name": c["name"], "from": c["before"], "to": c["after"], "size_delta": c["size_delta"]}
        for c in plan.get("changes", [])
    ]
    view = {
        "command_id": plan["command_id"],
        "target_commit": plan.get("target_commit") or None,
        "changed": bool(plan.get("changed")),
        "expired": bool(
            plan.get("target_commit") != target
            or (plan.get("base_system") and current and plan["base_system"] != current)
        ),
        "size_delta": int(plan.get("size_delta", 0)),
        "reboot": bool(plan.get("reboot")),
        "reboot_reason": plan.get("reboot_reason", ""),
        "restart": plan.get("restart", []),
        "start": plan.get("start", []),
        "stop": plan.get("stop", []),
        "changes": changes,
        "error": error,
        "finished_at": plan.get("finished_at"),
    }
    view["summary"] = f"plan failed: {error}" if error else plan_summary(view)
    return view


def _picks(queued: list[dict[str, Any]], busy: set[str]) -> list[str]:
    """Return the commands to send now, at most one per host (queued: oldest first).

    A command that runs no process (restart) jumps the line, even on a busy host; other
    work goes only to a host with nothing active, oldest first.
    """
    picks: dict[str, dict[str, Any]] = {}
    for cmd in queued:
        chosen = picks.get(cmd["host_id"])
        jumps = _urgent(cmd) and (chosen is None or not _urgent(chosen))
        if jumps or (chosen is None and cmd["host_id"] not in busy):
            picks[cmd["host_id"]] = cmd
    return [c["id"] for c in picks.values()]


def _urgent(cmd: dict[str, Any]) -> bool:
    """Return True for a command that runs no process (restart): it jumps the line."""
    return not rules.KIND_RULES[CommandKind(cmd["kind"])].runs_process


def _refusal(host_id: str, code: str, reason: str) -> dict[str, Any]:
    return {"host_id": host_id, "error": code, "detail": for_people(reason)}


def _queued(cmd: dict[str, Any]) -> dict[str, Any]:
    return {"host_id": cmd["host_id"], "command_id": cmd["id"], "state": cmd["state"]}
