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
    gate.json     a gated switch, once activated: the line the dashboard must acknowledge
    confirmed     created by the agent when the dashboard acknowledged that line
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
        # Lines in the file: a line's sequence number is its line number (agent.journal).
        self.count = path.read_bytes().count(b"\n")

    def write(self, stream: str, text: str) -> int:
        """Write one line; return its sequence number."""
        record = json.dumps({"s": stream, "t": text}, ensure_ascii=False)
        with self._lock:
            self._fh.write(record + "\n")
            self._fh.flush()
            self.count += 1
            return self.count

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


def _stop_group(pgid: int, grace: float, leader: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the step's process group, then SIGKILL whatever is left after grace.

    The group's leader is our child: once it exits it stays a zombie, still a member of
    the group, until it is reaped, so it is reaped here as soon as it ends. Otherwise a
    step that obeyed SIGTERM at once still cost the whole grace (a stop took 10 s).
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
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
                _stop_group(proc.pid, step.get("grace", 10), proc)
                outcome = "cancelled"
            elif deadline is not None and time.time() > deadline:
                sink.write("system", "hard time limit reached: stopping the command")
                _stop_group(proc.pid, step.get("grace", 10), proc)
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
        detail = ""
        if result == "succeeded" and plan.get("gate"):
            result, exit_code, detail = _gated(plan, jdir, sink)
    finally:
        sink.close()
    record = {"result": result, "exit_code": exit_code, "steps": steps, "finished_at": time.time()}
    return record | ({"detail": detail} if detail else {})


# --- the health gate of a switch (nixfleet.core.gates) -------------------------------------
_PROBE_EVERY_S = 0.5  # between two rounds of the checks that have not passed yet
_TICK_S = 0.05  # how soon the agent's confirmation (a file) is noticed


def _gated(plan: dict[str, Any], jdir: Path, sink: _Sink) -> tuple[str, int, str]:
    """Return (result, exit code, detail) of a switch that activated, after its gate.

    1. Note the line the dashboard must acknowledge (gate.json): only a dashboard reached
       after the activation can acknowledge it, and the agent then creates `confirmed`.
    2. Until the deadline, probe the checks that have not passed yet, every half second.
    3. Confirmed and every check passed: keep the new generation. Otherwise (deadline, or a
       stop) roll back to the previous generation, here, with no dashboard needed.
    """
    gate = plan["gate"]
    limit = float(gate["deadline_s"])
    deadline = time.time() + limit
    checks = list(gate["checks"])
    seq = sink.write(
        "system",
        f"health gate: keeping this generation only if, within {limit:g} s, "
        + _gate_terms(bool(gate["confirm"]), len(checks)),
    )
    _write_json(jdir / "gate.json", {"confirm_seq": seq, "deadline": deadline})
    confirmed = not gate["confirm"]
    reasons: dict[str, str] = {}
    probed_at = 0.0
    while True:
        if not confirmed and (jdir / "confirmed").exists():
            confirmed = True
            sink.write("system", "health gate: the agent reached the dashboard")
        if checks and time.monotonic() - probed_at >= _PROBE_EVERY_S:
            probed_at = time.monotonic()
            checks = _probe_round(checks, reasons, deadline, sink)
        if confirmed and not checks:
            sink.write("system", "health gate passed: keeping the new generation")
            return "succeeded", 0, ""
        if (jdir / "cancel").exists():
            return _roll_back(plan, jdir, sink, "stopped during the health gate")
        if time.time() >= deadline:
            break
        time.sleep(_TICK_S)
    if checks:
        label = checks[0]["label"]
        why = f"health check {label}: {reasons.get(label, 'did not pass in time')}"
    else:
        why = f"the agent did not reach the dashboard within {limit:g} s"
    return _roll_back(plan, jdir, sink, why)


def _gate_terms(confirm: bool, checks: int) -> str:
    terms = ["the agent reaches the dashboard"] if confirm else []
    if checks:
        terms.append("its check passes" if checks == 1 else f"its {checks} checks pass")
    return " and ".join(terms)


def _probe_round(
    checks: list[dict[str, Any]], reasons: dict[str, str], deadline: float, sink: _Sink
) -> list[dict[str, Any]]:
    """Return the checks still failing after one probe of each; note why each failed."""
    failing = []
    for check in checks:
        budget = max(0.2, min(5.0, deadline - time.time()))
        why = _probe(check, budget)
        if why is None:
            sink.write("system", f"PASS {check['label']}")
        else:
            reasons[check["label"]] = why
            failing.append(check)
    return failing


def _probe(check: dict[str, Any], timeout: float) -> str | None:
    """Return None when the check passes, else why it failed (a few words)."""
    kind = check["kind"]
    try:
        if kind == "tcp":
            import socket

            socket.create_connection((check["host"], check["port"]), timeout=timeout).close()
            return None
        if kind == "http":
            return _probe_http(check["url"], timeout)
        if kind == "tests":
            scripts = sorted(Path(check["dir"]).glob("T*.sh"))
            for script in scripts:
                why = _probe_argv([str(script)], timeout, check.get("cwd"))
                if why is not None:
                    return f"{script.name} {why}"
            return None
        return _probe_argv(check["argv"], timeout, None)
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _probe_http(url: str, timeout: float) -> str | None:
    import urllib.error
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_args: Any, **_kw: Any) -> None:
            return None  # a 3xx is not a 2xx: it fails the check

    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as res:
            code = int(res.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
    except urllib.error.URLError as exc:
        reason = exc.reason
        return getattr(reason, "strerror", None) or str(reason)[:120]
    return None if 200 <= code < 300 else f"HTTP {code}"


def _probe_argv(argv: list[str], timeout: float, cwd: str | None) -> str | None:
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"gave no answer within {timeout:.0f} s"
    if proc.returncode == 0:
        return None
    said = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip().splitlines()
    last = f": {said[-1][:120]}" if said else ""
    return f"exit {proc.returncode}{last}"


def _generation(profile: str | None) -> str:
    """Return the generation link the profile points at ("" when unknown)."""
    try:
        return os.readlink(profile) if profile else ""
    except OSError:
        return ""


def _roll_back(plan: dict[str, Any], jdir: Path, sink: _Sink, why: str) -> tuple[str, int, str]:
    """Return the result of going back to the previous generation because of why.

    A switch to the system that was already current makes no new generation: going back
    one would undo an earlier deploy, so that one stays and the command fails instead.
    """
    gate = plan["gate"]
    before = gate.get("generation_before", "")
    if before and before == _generation(gate.get("profile")):
        sink.write("system", f"health gate failed: {why}; the switch made no new generation")
        return "failed", 1, f"{why}; the switch made no new generation, so none was undone"
    sink.write("system", f"health gate failed: {why}; rolling back to the previous generation")
    (jdir / "cancel").unlink(missing_ok=True)  # a stop asked for this rollback, not against it
    for step in gate["rollback"]:
        outcome = _run_step(step, jdir, sink, None)
        if outcome != 0:
            code = outcome if isinstance(outcome, int) else 1
            return "failed", code, f"{why}; the rollback failed too (exit {code})"
    sink.write("system", "rolled back to the previous generation")
    return "rolled_back", 0, why


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main() -> None:
    jdir = Path(sys.argv[1])
    (jdir / "pid").write_text(str(os.getpid()))
    # The agent's own SIGTERM (or a service restart) must not end the command.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _write_json(jdir / "exit.json", run_plan(jdir))


if __name__ == "__main__":
    main()
