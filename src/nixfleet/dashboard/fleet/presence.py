"""Presence across replicas: this process's lease, and the hosts of replicas that died.

On PostgreSQL each dashboard process is a replica with an id and a lease it renews every
third of NIXFLEET_REPLICA_LEASE_S; a host's row names the replica holding its agent. When
a replica stops renewing (kill -9, a frozen machine, a cut cable), the first other replica
to see its lease run out releases its hosts: they show offline and their running commands
enter the reconnect window. Their agents meanwhile reconnect through the balancer to a
live replica and re-attach, which ends the window.

On SQLite there is one process: start-up marks every host offline (Fleet.startup).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from nixfleet.storage import replicas as store
from nixfleet.storage.db import log_failure

if TYPE_CHECKING:
    from nixfleet.dashboard.fleet.hub import Hub
    from nixfleet.dashboard.fleet.service import Fleet

log = logging.getLogger("nixfleet.presence")
# Hosts announced at a time after a release: one read each batch, not one per host, and
# not 10,000 requests for the pool at once.
_ANNOUNCE_BATCH = 500


class Presence:
    def __init__(self, fleet: Fleet, hub: Hub, lease_s: float) -> None:
        self.fleet = fleet
        self.hub = hub
        self.lease_s = lease_s
        self._tasks: list[asyncio.Task[None]] = []
        self._announcing: set[asyncio.Task[None]] = set()
        # The fleet-wide counts, while this replica is the oldest live one (it reports them).
        self.census: store.Census | None = None
        # Hosts per deploy state: every host's view, so counted once a lease, not a renewal.
        self._deploy: dict[str, int] | None = None
        self._deploy_at = 0.0

    @property
    def replica(self) -> str:
        return self.fleet.replica

    async def startup(self) -> None:
        """Register with a fresh lease, release dead replicas' hosts, start renewing."""
        await store.register(self.fleet.db, self.replica, self.fleet.clock(), self.lease_s)
        await self.release_dead()
        loop = asyncio.get_running_loop()
        # Two loops: the renewal must never wait for the other work. A census of 20,000
        # hosts or the announcement of thousands released, done between two renewals, had
        # a busy replica miss its lease, be taken for dead, take its hosts back, announce
        # them all, and miss the next one (docs/benchmarks.md, issue 18).
        self._tasks = [loop.create_task(self._keep_lease()), loop.create_task(self._watch())]

    async def shutdown(self) -> None:
        """Stop renewing and hand back this replica's hosts (their agents move on)."""
        for task in [*self._tasks, *self._announcing]:
            task.cancel()
        for task in [*self._tasks, *self._announcing]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            released = await store.release_own(self.fleet.db, self.replica, self.fleet.clock())
            await self._announce(released)

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.renew()
            except Exception as exc:
                log_failure(log, "presence: lease renewal", exc)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.release_dead()
                await self._count_if_oldest()
            except Exception as exc:
                log_failure(log, "presence: checking the other replicas", exc)

    async def renew(self) -> None:
        """Renew the lease; after being taken for dead, register again and take back the
        hosts whose agents are still connected here."""
        db, now = self.fleet.db, self.fleet.clock()
        if await store.renew(db, self.replica, now, self.lease_s):
            return
        log.warning("presence: %s was taken for dead; taking its agents back", self.replica)
        await store.register(db, self.replica, now, self.lease_s)
        self._announce_later(await store.reclaim(db, self.replica, list(self.hub.links), now))

    async def _count_if_oldest(self) -> None:
        """Count the whole fleet while this replica is the oldest live one, else nothing.

        The replicas agree on which is oldest (one table, ordered by start), so one
        replica at a time reports the fleet's totals: a sum over replicas is not doubled,
        and when the reporter dies the next oldest takes over once its lease runs out.
        """
        db, now = self.fleet.db, self.fleet.clock()
        live = await store.live(db, now)
        if not live or live[0]["id"] != self.replica:
            self.census, self._deploy = None, None
            return
        counts = await store.census(db)
        if self._deploy is None or now - self._deploy_at >= self.lease_s:
            self._deploy, self._deploy_at = await self.fleet.deploy_counts(), now
        self.census = replace(counts, deploy=self._deploy)

    async def release_dead(self) -> None:
        released = await store.release_dead(self.fleet.db, self.replica, self.fleet.clock())
        if released:
            log.info(
                "presence: %d hosts of replicas whose lease ran out are offline", len(released)
            )
        self._announce_later(released)

    def _announce_later(self, host_ids: list[str]) -> None:
        """Announce hosts in a task of its own: thousands of them take a while, and the
        loop that found them has its next round to keep."""
        if not host_ids:
            return
        task = asyncio.get_running_loop().create_task(self._announce(host_ids))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _announce(self, host_ids: list[str]) -> None:
        for i in range(0, len(host_ids), _ANNOUNCE_BATCH):
            await self.fleet.publish_hosts(host_ids[i : i + _ANNOUNCE_BATCH])
