"""Guard rails for commands: what a host can be sent at all, and what needs a second yes.

A command that can never be delivered (the host never enrolled, its token was revoked) is
refused at once with what to do instead, rather than queued until it expires. A deploy
while another deploy runs on the same host is refused unless the operator confirms it
(`force`): a second click on Switch must not silently queue a second build.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nixfleet.core.errors import Conflict

DEPLOY_KINDS = frozenset({"switch", "pull-switch", "rollback"})


class NotEnrolled(Conflict):
    code = "not_enrolled"


class AlreadyDeploying(Conflict):
    code = "already_deploying"


def undeliverable(host: Mapping[str, Any]) -> str | None:
    """Return why no command can reach this host, or None when one can.

    A host without a credential of its own that was never seen has no agent at all yet
    (one using the deprecated shared token has been seen, and may be sent commands).
    """
    host_id = host["id"]
    state = host.get("identity_state")
    if state == "revoked":
        return (
            f"commands: {host_id}'s agent token was revoked, so its agent cannot connect; "
            "issue a new token or enrollment code first"
        )
    if state == "none" and host.get("last_seen") is None:
        return (
            f"commands: {host_id} has never enrolled, so no agent would receive this; "
            "enroll it with its enrollment code first (or issue a new one)"
        )
    return None


def check_deliverable(host: Mapping[str, Any]) -> None:
    """Raise NotEnrolled when no command can reach this host."""
    reason = undeliverable(host)
    if reason:
        raise NotEnrolled(reason)


def check_second_deploy(kind: str, active: Sequence[Mapping[str, Any]], force: bool) -> None:
    """Raise AlreadyDeploying when kind is a deploy and one is active, unless forced."""
    if force or kind not in DEPLOY_KINDS:
        return
    running = [c for c in active if c["kind"] in DEPLOY_KINDS]
    if running:
        cmd = running[0]
        raise AlreadyDeploying(
            f"commands: a {cmd['kind']} is already {cmd['state']} on {cmd['host_id']}; "
            "wait for it, stop it, or confirm to queue another one after it"
        )
