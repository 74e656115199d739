"""Deploy on push: a verified forge delivery moves the fleet's target and, when so
configured, starts a rollout. Every delivery is counted (security event `hook`) and
every one that got past the signature is audited with the forge's delivery id."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nixfleet.config import Settings
from nixfleet.core.errors import NixFleetError, for_people
from nixfleet.core.hooks import HookVerdict, branch_of, parse_push
from nixfleet.core.rollouts import parse_policy
from nixfleet.dashboard.fleet.rollouts import Rollouts
from nixfleet.dashboard.fleet.service import Fleet
from nixfleet.security.webhooks import Forge, delivery_of, event_of, verify
from nixfleet.storage import hook_deliveries
from nixfleet.storage import hosts as host_store

log = logging.getLogger("nixfleet.hooks")

# verdict → HTTP status: refusals are 4xx so the forge shows them; "nothing to do" is 202.
STATUS = {
    HookVerdict.DISABLED: 404,
    HookVerdict.BAD_SIGNATURE: 401,
    HookVerdict.NO_DELIVERY: 400,
    HookVerdict.BAD_PAYLOAD: 400,
    HookVerdict.REPLAY: 409,
    HookVerdict.OTHER_BRANCH: 202,
    HookVerdict.OTHER_EVENT: 202,
    HookVerdict.ACCEPTED: 202,
}


@dataclass
class Outcome:
    """What a delivery led to; `detail` is the sentence the forge's delivery log shows."""

    verdict: HookVerdict
    detail: str
    delivery: str = ""
    audit: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return STATUS[self.verdict]


class PushHooks:
    def __init__(self, settings: Settings, fleet: Fleet, rollouts: Rollouts) -> None:
        self.settings = settings
        self.fleet = fleet
        self.rollouts = rollouts
        self.secrets = {
            Forge.GITHUB: settings.hook_github_secret.get_secret_value(),
            Forge.GITLAB: settings.hook_gitlab_token.get_secret_value(),
            Forge.FORGEJO: settings.hook_forgejo_secret.get_secret_value(),
        }

    async def receive(self, forge: Forge, headers: Mapping[str, str], body: bytes) -> Outcome:
        """Return what this delivery led to.

        1. The forge's hook must be on, and the delivery signed (or tokened) with its secret.
        2. It needs a delivery id; a ping is answered, other events are left alone.
        3. The payload must be a push; the delivery (its id and its body) is remembered,
           so a replay is refused even on another replica.
        4. Only a push to the configured branch moves the target (and starts a rollout).
        """
        if not self.secrets[forge]:
            return Outcome(HookVerdict.DISABLED, f"The {forge.value} hook is not configured.")
        if not verify(forge, headers, body, self.secrets[forge]):
            return Outcome(HookVerdict.BAD_SIGNATURE, "The signature does not match.")
        delivery = delivery_of(forge, headers)
        if not delivery or len(delivery) > 100:
            return Outcome(HookVerdict.NO_DELIVERY, "The delivery has no usable delivery id.")
        event = event_of(forge, headers)
        if event != _PUSH[forge]:
            return Outcome(
                HookVerdict.OTHER_EVENT, f"A {event or 'nameless'} event: nothing to do.", delivery
            )
        try:
            push = parse_push(body)
        except NixFleetError as exc:
            return Outcome(HookVerdict.BAD_PAYLOAD, for_people(str(exc)), delivery)
        digest = hashlib.sha256(body).hexdigest()
        if not await hook_deliveries.remember(
            self.fleet.db, forge.value, delivery, digest, self.fleet.clock()
        ):
            return Outcome(HookVerdict.REPLAY, "This delivery was received before.", delivery)
        seen = {"ref": push.ref, "after": push.after}
        if branch_of(push.ref) != self.settings.config_branch:
            text = f"A push to {push.ref}, not to {self.settings.config_branch}: nothing to do."
            return Outcome(HookVerdict.OTHER_BRANCH, text, delivery, seen)
        return await self._act(forge, delivery, seen)

    async def _act(self, forge: Forge, delivery: str, seen: dict[str, Any]) -> Outcome:
        target = await self.fleet.refresh_target(force=True)
        done: dict[str, Any] = {**seen, "target": target}
        text = f"The target is now {(target or 'unknown')[:12]}."
        if self.settings.hook_action == "rollout":
            ro = await self._rollout(forge, delivery)
            done["rollout_id"] = ro["id"] if ro else None
            text += f" Rollout {ro['id']} started." if ro else " No host can take part."
        log.info("hooks: %s delivery %s: %s", forge.value, delivery, text)
        return Outcome(HookVerdict.ACCEPTED, text, delivery, done)

    async def _rollout(self, forge: Forge, delivery: str) -> dict[str, Any] | None:
        hosts = sorted(await host_store.ids(self.fleet.db))
        if not hosts:
            return None
        policy = parse_policy(self.settings.hook_rollout_policy)
        try:
            return await self.rollouts.create(
                f"hook:{forge.value}",
                hosts,
                self.settings.hook_rollout_command,
                policy,
                source=f"{forge.value}:{delivery}",
            )
        except NixFleetError:
            return None  # no host can take part (none enrolled)


_PUSH = {Forge.GITHUB: "push", Forge.GITLAB: "Push Hook", Forge.FORGEJO: "push"}
