"""The hub: the agent connections held by this dashboard process.

It listens to the event bus, so a command queued by any replica reaches the replica that
holds the host's connection. Sends to one agent are serialized by a per-host lock; claims
are made in rounds by one task, for all hosts with something new at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket

from nixfleet.core.commands import FINAL_STATES, CommandState
from nixfleet.core.framing import CLOSE_HOST_REMOVED
from nixfleet.core.protocol import Cancel, Command
from nixfleet.dashboard.fleet.service import Fleet, stored_gate
from nixfleet.storage.bus import Event
from nixfleet.storage.db import log_failure

log = logging.getLogger("nixfleet.hub")

_CLAIM_AFTER = frozenset({CommandState.QUEUED, *FINAL_STATES})


@dataclass(slots=True)  # one per connected agent: thousands of them
class AgentLink:
    host_id: str
    ws: WebSocket
    credential: str = ""  # HMAC of what the agent authenticated with; checked while live
    pending_credential: str = ""  # a token sent to a shared-token agent, not yet saved
    committing: bool = False  # that token is being made the host's right now
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, text: str) -> None:
        async with self.lock:
            await self.ws.send_text(text)


class Hub:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.links: dict[str, AgentLink] = {}
        self._wanted: set[str] = set()
        self._pumping: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe = fleet.bus.subscribe(self._on_event)
        # The live-credential check (recheck_credentials): the change counter it last saw,
        # the hosts connected since, and when overlap tokens still in use stop working.
        self._credentials_seen: int | None = None
        self._unchecked: set[str] = set()
        self._overlap_ends: dict[str, float] = {}

    def close(self) -> None:
        self._unsubscribe()

    def attach(self, link: AgentLink) -> AgentLink | None:
        """Register a connection; return the one it replaces (same host), if any."""
        old = self.links.get(link.host_id)
        self.links[link.host_id] = link
        self._unchecked.add(link.host_id)
        return old

    def detach(self, link: AgentLink) -> bool:
        """Forget a connection; return False when a newer one already replaced it."""
        if self.links.get(link.host_id) is link:
            del self.links[link.host_id]
            self._overlap_ends.pop(link.host_id, None)
            return True
        return False

    def _on_event(self, event: Event) -> None:
        host_id = event.get("host_id") or event.get("command", {}).get("host_id")
        if host_id not in self.links:
            return
        # Something new to send (queued), or the line freed (final): time to claim.
        if event["type"] == "command" and event["command"]["state"] in _CLAIM_AFTER:
            self._want(host_id)
        elif event["type"] == "agent_control":
            self.spawn(self._control(host_id, event))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def pump(self, host_id: str) -> None:
        """Send the host its next deliverable commands (soon, with whatever else is due)."""
        self._want(host_id)

    def _want(self, host_id: str) -> None:
        self._wanted.add(host_id)
        if self._pumping is None:
            self._pumping = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        """Claim and send, in rounds, for every host that may have something to receive.

        One round is a few queries for all the hosts waiting, not a few per host: a bulk
        switch to thousands of hosts is claimed in one UPDATE. Rounds run one at a time, and
        a claimed command counts as active at once, so a host never gets two by accident. A
        host that got a command is checked again in the next round (a restart may be
        followed by more).
        """
        try:
            while self._wanted:
                hosts = [h for h in self._wanted if h in self.links]
                self._wanted.clear()
                if not hosts:
                    continue
                try:
                    claimed = await self.fleet.claim_many(hosts)
                except Exception as exc:
                    log_failure(log, f"hub: claiming commands for {len(hosts)} hosts", exc)
                    continue
                for cmd in claimed:
                    # Not awaited here: one agent slow to read must not hold up the others.
                    self.spawn(self._deliver(cmd))
                self._wanted.update(cmd["host_id"] for cmd in claimed)
        finally:
            self._pumping = None

    async def _deliver(self, cmd: dict[str, Any]) -> None:
        host_id = cmd["host_id"]
        link = self.links.get(host_id)
        msg = Command(
            command_id=cmd["id"],
            kind=cmd["kind"],
            expires_at=cmd["expires_at"],
            gate=stored_gate(cmd.get("gate")),
            generation=cmd.get("generation"),
        )
        try:
            if link is None:
                raise ConnectionError("no link")
            await link.send(msg.model_dump_json())
        except Exception:
            # The link died between claim and send: give the command back, or it would
            # sit in `dispatched` with no disconnect to start its reconnect window.
            log.info("hub: could not deliver %s to %s; queued again", cmd["id"], host_id)
            await self.fleet.unclaim(host_id, cmd["id"])

    async def recheck_credentials(self) -> None:
        """Drop every connection whose credential was rotated out, revoked or removed,
        also by another process (the CLI, a replica), with the close code that says why.

        Cheap when nothing changed: one read of the credential change counter. Only when it
        moved are all links checked; otherwise only the links attached since the last
        check (authenticated before a change this check may have missed) and those whose
        rotation overlap has ended by now (an expiry that no write announces).
        """
        seen = await self.fleet.identity.changes_seen()
        now = self.fleet.clock()
        if seen != self._credentials_seen:
            due, self._unchecked = set(self.links), set()
        else:
            due, self._unchecked = self._unchecked, set()
            due.update(h for h, until in self._overlap_ends.items() if until <= now)
        self._credentials_seen = seen
        links = {h: self.links[h] for h in due if h in self.links and self.links[h].credential}
        # A link moving to its own token is left alone meanwhile, and looked at next time.
        self._unchecked.update(h for h, link in links.items() if link.committing)
        links = {h: link for h, link in links.items() if not link.committing}
        checked = {h: link.credential for h, link in links.items()}
        try:
            verdicts = await self.fleet.identity.check_links(checked)
        except BaseException:
            self._unchecked.update(due)  # the next sweep tries these again
            raise
        for host_id in checked:
            self._overlap_ends.pop(host_id, None)
        self._overlap_ends.update(verdicts.valid_until)
        for host_id, code in verdicts.closes.items():
            await self._cut(links[host_id], checked[host_id], code)

    async def _cut(self, link: AgentLink, checked: str, code: int) -> None:
        host_id = link.host_id
        if self.links.get(host_id) is not link or link.committing:
            return
        if link.credential != checked:
            return  # it moved to its own token while we looked
        log.info("hub: dropping %s: its credential is no longer valid (%s)", host_id, code)
        try:
            await link.ws.close(code, "agent credential no longer valid")
        except Exception:
            log.debug("hub: link to %s already closed", host_id)

    async def _control(self, host_id: str, event: Event) -> None:
        link = self.links.get(host_id)
        if link is None or event.get("keep") == self.fleet.replica:
            return  # "keep": the replica that sent it holds the host's new connection
        try:
            if event["action"] == "cancel":
                await link.send(Cancel(command_id=event["command_id"]).model_dump_json())
            elif event["action"] == "drop":
                await link.ws.close(
                    event.get("code", CLOSE_HOST_REMOVED),
                    event.get("reason", "host removed"),
                )
        except Exception:
            log.debug("hub: control message to %s not sent", host_id)
