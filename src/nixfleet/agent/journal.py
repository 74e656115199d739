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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixfleet.agent import codec
from nixfleet.core.framing import batch_lines, cut_line
from nixfleet.core.wire import Change, Finished, OutputLine, PlanReport, TestResult

_SCAN_CHUNK = 1 << 20


@dataclass
class Entry:
    """One journalled command: how far its output was read and acknowledged, its result.

    Unacknowledged output is not held in memory: it is in output.jsonl already, and a
    batch is read from there when it is sent (`batch_after`), so the agent's memory stays
    flat however long the dashboard is away.
    """

    command_id: str
    kind: str
    path: Path
    started_at: float
    acked_seq: int = 0
    read_seq: int = 0  # complete lines in output.jsonl seen so far (the last sequence)
    read_offset: int = 0  # byte offset just after line read_seq
    finished: Finished | None = None
    warned: bool = False
    gate_confirmed: bool = False
    # Known (sequence → byte offset just after that line), so a batch starts with a seek.
    _marks: dict[int, int] = field(default_factory=lambda: {0: 0})

    # --- what the runner wrote -------------------------------------------------------
    def scan(self) -> int:
        """Count the complete lines written since the last call; return how many."""
        out_file = self.path / "output.jsonl"
        if not out_file.exists():
            return 0
        new, pos = 0, self.read_offset
        with out_file.open("rb") as fh:
            fh.seek(pos)
            while chunk := fh.read(_SCAN_CHUNK):
                if count := chunk.count(b"\n"):
                    new += count
                    # A partial last line is still being written: it counts next time.
                    self.read_offset = pos + chunk.rfind(b"\n") + 1
                pos += len(chunk)
        self.read_seq += new
        return new

    def batch_after(self, seq: int) -> list[OutputLine]:
        """Return the next batch of lines after seq (by bytes, see core.framing.batch_lines), read
        from the journal; empty when every line read so far is past seq."""
        start = self._floor(seq)
        offsets: dict[int, int] = {}

        def lines() -> Iterator[OutputLine]:
            current = start
            with (self.path / "output.jsonl").open("rb") as fh:
                fh.seek(self._marks[start])
                while current < self.read_seq:
                    raw = fh.readline()
                    if not raw.endswith(b"\n"):
                        return
                    current += 1
                    offsets[current] = fh.tell()
                    if current > seq:
                        yield _line(current, raw)

        batch = next(batch_lines(lines(), codec.json_size), [])
        if batch:
            self._remember(batch[-1].seq, offsets[batch[-1].seq])
        return batch

    def _floor(self, seq: int) -> int:
        """Return the highest known sequence at or before seq (0, the file's start, is known)."""
        return max(k for k in self._marks if k <= seq)

    def _remember(self, seq: int, offset: int) -> None:
        self._marks[seq] = offset
        if len(self._marks) > 256:  # keep the start, the acknowledged point, the newest
            keep = {0, self._floor(self.acked_seq), *sorted(self._marks)[-128:]}
            self._marks = {k: v for k, v in self._marks.items() if k in keep}

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
            change=_change(record.get("change")),
        )
        codec.encode(self.finished)  # out of bounds (a result the runner made up): raise here
        return self.finished

    # --- what the dashboard acknowledged ---------------------------------------------
    def ack(self, seq: int) -> None:
        """Persist the acknowledged mark (replays skip what is before it)."""
        if seq <= self.acked_seq:
            return
        self.acked_seq = seq
        floor = self._floor(seq)
        self._marks = {k: v for k, v in self._marks.items() if k == 0 or k >= floor}
        self._save_meta()

    def confirm_gate(self, seq: int) -> None:
        """Tell a gated switch's runner that the dashboard acknowledged line seq.

        The runner waits for the line it wrote after the activation (gate.json): only a
        dashboard reached since then can acknowledge it, which is what the gate asks.
        """
        if self.gate_confirmed:
            return
        try:
            need = int(json.loads((self.path / "gate.json").read_text())["confirm_seq"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return  # no gate, or not activated yet
        if seq >= need:
            (self.path / "confirmed").touch()
            self.gate_confirmed = True

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


def _change(raw: object) -> Change | None:
    """Return the from → to the agent put in the record, or None if there is none (or it
    breaks the bounds: the result itself must still be sent)."""
    if raw is None:
        return None
    try:
        return codec.convert(Change, raw)
    except codec.Invalid:
        return None


def _line(seq: int, raw: bytes) -> OutputLine:
    """Return one journal record as an output line (cut to the protocol's bound)."""
    try:
        rec = json.loads(raw)
        stream = {"s": "system"}.get(rec["s"], rec["s"])
        text = cut_line(str(rec["t"]))
    except (ValueError, KeyError, TypeError):
        stream, text = "system", "(an unreadable line in the journal)"
    if stream not in ("stdout", "stderr", "system"):
        stream = "system"
    return OutputLine(seq=seq, stream=stream, text=text)


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
