"""How the fleet's events travel between replicas: as references to rows, read back here.

A host event becomes its host id, a command event its command id, an output event its
command and sequence range; the replica that receives one reads the rows from its own
tables and builds the same event its browsers and hub would have got locally. Reading
means a receiver may see a newer state than the sender announced, never an older one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nixfleet.storage import commands as command_store
from nixfleet.storage import hosts as host_store
from nixfleet.storage import output as output_store
from nixfleet.storage.bus import Event

if TYPE_CHECKING:
    from nixfleet.dashboard.fleet.service import Fleet

# An output event names at most one agent message's lines (2,000) plus replays.
_MAX_LINES = 5000


class FleetCodec:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def shrink(self, event: Event) -> Event:
        kind = event["type"]
        if kind == "host":
            return {"type": "host", "host_id": event["host"]["id"]}
        if kind == "command":
            cmd = event["command"]
            return {"type": "command", "id": cmd["id"], "host_id": cmd["host_id"]}
        if kind == "output" and event["lines"]:
            seqs = [ln["seq"] for ln in event["lines"]]
            return {
                "type": "output",
                "command_id": event["command_id"],
                "host_id": event["host_id"],
                "first": min(seqs),
                "last": max(seqs),
            }
        return event

    async def expand(self, refs: Sequence[Event]) -> list[Event | None]:
        """Return one event per reference, in order; None where the row is gone."""
        db = self.fleet.db
        host_ids = {r["host_id"] for r in refs if r["type"] == "host"}
        command_ids = [r["id"] for r in refs if r["type"] == "command"]
        hosts = {h["id"]: h for h in await host_store.get_many(db, host_ids)}
        commands = {c["id"]: c for c in await command_store.get_many(db, command_ids)}
        out: list[Event | None] = []
        for ref in refs:
            if ref["type"] == "host":
                row = hosts.get(ref["host_id"])
                out.append({"type": "host", "host": self.fleet.host_view(row)} if row else None)
            elif ref["type"] == "command":
                cmd = commands.get(ref["id"])
                out.append({"type": "command", "command": cmd} if cmd else None)
            elif ref["type"] == "output" and "first" in ref:
                out.append(await self._output(ref))
            else:
                out.append(ref)
        return out

    async def _output(self, ref: dict[str, Any]) -> Event | None:
        limit = min(ref["last"] - ref["first"] + 1, _MAX_LINES)
        lines = await output_store.lines(
            self.fleet.db, ref["command_id"], after_seq=ref["first"] - 1, limit=limit
        )
        if not lines:
            return None
        return {
            "type": "output",
            "command_id": ref["command_id"],
            "host_id": ref["host_id"],
            "lines": lines,
        }
