"""The on-disk journal of commands in flight: what survives an agent restart.

One directory per command under STATE_DIR/journal/<command_id>/ (see agent.detach for the
files). The agent adds meta.json (kind, start time, last acknowledged sequence) and
deletes the directory once the dashboard has acknowledged the final result.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixfleet.core.protocol import Finished, OutputLine, PlanReport, TestResult


@dataclass
class Entry:
    """One journalled command: its buffered, unacknowledged output and its result."""

    command_id: str
    kind: str
    path: Path
    started_at: float
    acked_seq: int = 0
    read_seq: int = 0
    read_offset: int = 0
    pending: list[OutputLine] = field(default_factory=list)
    finished: Finished | None = None
    warned: bool = False

    # --- what the runner wrote -------------------------------------------------------
    def read_new_lines(self, limit: int = 1000) -> list[OutputLine]:
        """Return output lines written since the last call and buffer them until acked."""
        out_file = self.path / "output.jsonl"
        if not out_file.exists():
            return []
        new: list[OutputLine] = []
        with out_file.open("rb") as fh:
            fh.seek(self.read_offset)
            while len(new) < limit:
                raw = fh.readline()
                if not raw.endswith(b"\n"):
                    break  # a partial line: the runner is still writing it
                self.read_offset += len(raw)
                self.read_seq += 1
                if self.read_seq <= self.acked_seq:
                    continue
                rec = json.loads(raw)
                stream = {"s": "system"}.get(rec["s"], rec["s"])
                new.append(OutputLine(seq=self.read_seq, stream=stream, text=rec["t"]))
        self.pending.extend(new)
        return new

    def exit_record(self) -> dict[str, Any] | None:
        """Return the runner's exit record, or None while it runs."""
        try:
            return dict(json.loads((self.path / "exit.json").read_text()))
        except FileNotFoundError:
            return None

    def runner_alive(self) -> bool:
        """Return True while the detached runner process exists."""
        try:
            pid = int((self.path / "pid").read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError):
            # No pid yet: the runner is still starting, give it the benefit of the doubt.
            return time.time() - self.started_at < 10
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def finish(self, record: dict[str, Any], plan: PlanReport | None = None) -> Finished:
        """Return (and remember) the Finished message for the runner's exit record."""
        tests = [
            TestResult(name=s["name"], ok=s["exit_code"] == 0, exit_code=s["exit_code"])
            for s in record.get("steps", [])
            if self.kind == "test"
        ]
        self.finished = Finished(
            command_id=self.command_id,
            result=record["result"],
            exit_code=record.get("exit_code"),
            # A clock set back during the build must not make the result unsendable.
            duration_s=max(0.0, round(record.get("finished_at", time.time()) - self.started_at, 3)),
            last_seq=self.read_seq,
            detail=str(record.get("detail", ""))[:2000],
            tests=tests,
            plan=plan,
        )
        return self.finished

    # --- what the dashboard acknowledged ---------------------------------------------
    def ack(self, seq: int) -> None:
        """Drop buffered lines up to seq and persist the mark (replays skip them)."""
        if seq <= self.acked_seq:
            return
        self.acked_seq = seq
        self.pending = [ln for ln in self.pending if ln.seq > seq]
        self._save_meta()

    def request_cancel(self) -> None:
        (self.path / "cancel").touch()

    def _save_meta(self) -> None:
        meta = {
            "command_id": self.command_id,
            "kind": self.kind,
            "started_at": self.started_at,
            "acked_seq": self.acked_seq,
        }
        tmp = self.path / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.path / "meta.json")


class Journal:
    """The set of journalled commands under one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "journal"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def create(self, command_id: str, kind: str, plan: dict[str, Any]) -> Entry:
        """Return a new entry whose plan is on disk, ready for the runner."""
        path = self.root / command_id
        path.mkdir(mode=0o700)
        (path / "plan.json").write_text(json.dumps(plan))
        entry = Entry(command_id=command_id, kind=kind, path=path, started_at=time.time())
        entry._save_meta()
        return entry

    def load_all(self) -> list[Entry]:
        """Return the entries left by an earlier agent process, oldest first."""
        entries = []
        for meta_file in sorted(self.root.glob("*/meta.json")):
            meta = json.loads(meta_file.read_text())
            entries.append(
                Entry(
                    command_id=meta["command_id"],
                    kind=meta["kind"],
                    path=meta_file.parent,
                    started_at=meta["started_at"],
                    acked_seq=meta.get("acked_seq", 0),
                )
            )
        entries.sort(key=lambda e: e.started_at)
        return entries

    def remove(self, entry: Entry) -> None:
        shutil.rmtree(entry.path, ignore_errors=True)
