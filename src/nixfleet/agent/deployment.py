"""The agent's own record of what it deployed, kept in STATE_DIR/deployments.json.

A system built from a configuration with `system.configurationRevision` says which commit
it came from; a home-manager generation (or a configuration without it) does not. For
those, the agent remembers which commit each system it switched to was built from, and
how its last switch ended, across agent and dashboard restarts.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import msgspec

from nixfleet.agent import codec
from nixfleet.core.wire import DeployOutcome

log = logging.getLogger("nixfleet.agent.deployment")

# Enough for every generation a host keeps in practice; the oldest are forgotten first.
_MAX_SYSTEMS = 64


class DeployRecord:
    """Which commit each system this agent activated was built from, and the last outcome."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "deployments.json"
        self.systems: dict[str, str] = {}
        self.last: DeployOutcome | None = None
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self.systems = {str(k): str(v) for k, v in dict(data.get("systems", {})).items()}
            self.last = codec.convert(DeployOutcome, data["last"]) if data.get("last") else None
        except FileNotFoundError:
            return
        except (ValueError, TypeError, AttributeError) as exc:  # codec.Invalid is a ValueError
            # A damaged record only costs the fallback: the systems' own revisions still count.
            log.warning("agent: ignoring unreadable %s: %s", self.path, type(exc).__name__)

    def commit_for(self, system: str) -> str:
        """Return the commit the agent built system from, or "" when it did not build it."""
        return self.systems.get(system, "")

    @property
    def has_deployed(self) -> bool:
        return self.last is not None

    def note(self, outcome: DeployOutcome, system: str, commit: str) -> None:
        """Remember a finished switch; system/commit only when that switch activated system.

        A replay of the same command (a restarted agent re-reading its journal) changes
        nothing, so the record is the same however often a result is seen.
        """
        if self.last is not None and self.last.command_id == outcome.command_id:
            return
        if system and commit:
            self.systems.pop(system, None)
            self.systems[system] = commit
            while len(self.systems) > _MAX_SYSTEMS:
                self.systems.pop(next(iter(self.systems)))
        self.last = outcome
        self._save()

    def _save(self) -> None:
        data: dict[str, Any] = {
            "systems": self.systems,
            "last": msgspec.to_builtins(self.last) if self.last else None,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)
