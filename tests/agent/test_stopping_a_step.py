"""Stopping a running step (the stop button, a hard time limit): a step that ends on
SIGTERM is done then, not after the grace meant for steps that ignore it."""

from __future__ import annotations

import signal
import subprocess
import threading

from nixfleet.agent.detach import _stop_group

GRACE_S = 60.0


def _stop_in_background(proc: subprocess.Popen[bytes]) -> threading.Thread:
    stopper = threading.Thread(target=_stop_group, args=(proc.pid, GRACE_S, proc), daemon=True)
    stopper.start()
    return stopper


def test_a_step_that_obeys_sigterm_is_stopped_without_waiting_out_the_grace():
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    stopper = _stop_in_background(proc)
    # Before the fix the stopper saw the unreaped leader as alive and waited the grace out.
    stopper.join(timeout=GRACE_S / 2)
    assert not stopper.is_alive(), "the stop waited for the grace although the step had ended"
    assert proc.wait(timeout=5) == -signal.SIGTERM


def test_a_step_that_ignores_sigterm_is_killed_after_the_grace():
    # The shell ignores TERM, and so does its `sleep` (ignored signals are inherited).
    proc = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; exec sleep 600"],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    stopper = threading.Thread(target=_stop_group, args=(proc.pid, 0.5, proc), daemon=True)
    stopper.start()
    stopper.join(timeout=30)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.stdout.close()
