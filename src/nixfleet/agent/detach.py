"""The detached runner: executes one command's plan outside the agent's lifetime.

Run as `python -I -S .../detach.py JOURNAL_DIR` (or `python -m nixfleet.agent.detach`).
The agent starts it in a session of its own (or a transient systemd unit on NixOS), so a
`switch` that restarts the agent's service does not kill the build, and the result is
still written when nobody listens.

Files in JOURNAL_DIR (the agent reads them; a file outlives the agent, a pipe does not):
    plan.json     written by the agent: steps, deadline, whether to keep going on failure
    pid           this runner's pid
    step.pgid     process group of the step now running (the agent signals it to stop)
    output.jsonl  one JSON object per output line: {"s": stream, "t": text}
    cancel        created by the agent to ask for a stop
    exit.json     written last, atomically: exit code, how it ended, per-step results

Stdlib only, so it starts fast and never imports the rest of the agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any


class _Sink:
    """Serialize lines from two reader threads into output.jsonl, one flush per line."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, stream: str, text: str) -> None:
        record = json.dumps({"s": stream, "t": text}, ensure_ascii=False)
        with self._lock:
            self._fh.write(record + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


# A line is read at most this many bytes at a time, so a build that prints without
# newlines cannot fill the runner's memory; the rest of a longer line is dropped with a
# marker. The agent cuts to the protocol's bound again (core.protocol.cut_line: 65,536
# characters, which a line of this many bytes never exceeds): this file imports nothing.
_LINE_BYTES = 65536 - 64
_CUT = " … [line cut: longer than {} bytes]"


def _pump(pipe: IO[bytes], stream: str, sink: _Sink) -> None:
    cutting = False  # inside the dropped rest of an over-long line
    for raw in iter(lambda: pipe.readline(_LINE_BYTES), b""):
        cut = len(raw) >= _LINE_BYTES and not raw.endswith(b"\n")
        if not cutting:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            sink.write(stream, text + _CUT.format(_LINE_BYTES) if cut else text)
        cutting = cut
    pipe.close()


def _stop_group(pgid: int, grace: float) -> None:
    """SIGTERM the step's process group, then SIGKILL whatever is left after grace."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run_step(step: dict[str, Any], jdir: Path, sink: _Sink, deadline: float | None) -> str | int:
    """Return the step's exit code, or "cancelled" / "timed_out"."""
    sink.write("system", f"$ {' '.join(step['argv'])}")
    try:
        proc = subprocess.Popen(
            step["argv"],
            cwd=step.get("cwd") or None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, **step.get("env", {})},
        )
    except OSError as exc:
        sink.write("system", f"cannot start {step['argv'][0]}: {exc.strerror}")
        return 127
    (jdir / "step.pgid").write_text(str(proc.pid))
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", sink), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", sink), daemon=True),
    ]
    for t in readers:
        t.start()
    outcome: str | int | None = None
    while outcome is None:
        try:
            code = proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            if (jdir / "cancel").exists():
                _stop_group(proc.pid, step.get("grace", 10))
                outcome = "cancelled"
            elif deadline is not None and time.time() > deadline:
                sink.write("system", "hard time limit reached: stopping the command")
                _stop_group(proc.pid, step.get("grace", 10))
                outcome = "timed_out"
            continue
        # A step killed by a signal reports -N; shells report 128+N, and so do we.
        outcome = "cancelled" if (jdir / "cancel").exists() else (code if code >= 0 else 128 - code)
    proc.wait()
    # Children that kept the pipe open would hold the readers forever: end the group.
    _stop_group(proc.pid, 1.0)
    for t in readers:
        t.join(timeout=2)
    return outcome


def run_plan(jdir: Path) -> dict[str, Any]:
    """Return the exit record of the plan in jdir after running its steps in order.

    1. Run each step in its own process group, streaming its output to output.jsonl.
    2. Stop at the first failing step unless the plan says keep_going (host tests).
    3. A cancel request or the hard deadline ends the current step and the plan.
    """
    plan = json.loads((jdir / "plan.json").read_text())
    sink = _Sink(jdir / "output.jsonl")
    steps: list[dict[str, Any]] = []
    result = "succeeded"
    exit_code = 0
    try:
        for step in plan["steps"]:
            outcome = _run_step(step, jdir, sink, plan.get("deadline"))
            if isinstance(outcome, str):
                result, exit_code = outcome, 130 if outcome == "cancelled" else 124
                break
            steps.append({"name": step["name"], "exit_code": outcome})
            if step.get("report"):
                verdict = "PASS" if outcome == 0 else "FAIL"
                sink.write("system", f"{verdict} {step['name']} (exit {outcome})")
            if outcome != 0:
                result, exit_code = "failed", exit_code or outcome
                if not plan.get("keep_going"):
                    break
    finally:
        sink.close()
    return {"result": result, "exit_code": exit_code, "steps": steps, "finished_at": time.time()}


def main() -> None:
    jdir = Path(sys.argv[1])
    (jdir / "pid").write_text(str(os.getpid()))
    # The agent's own SIGTERM (or a service restart) must not end the command.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    record = run_plan(jdir)
    tmp = jdir / "exit.json.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(jdir / "exit.json")


if __name__ == "__main__":
    main()
