"""create_app(settings): the dashboard's ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from nixfleet.config import Settings
from nixfleet.dashboard import errors
from nixfleet.dashboard.alerting import Alerts, load_rules
from nixfleet.dashboard.audit_log import AuditLog
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.event_store import EventStore
from nixfleet.dashboard.fleet import Fleet
from nixfleet.dashboard.hub import Hub
from nixfleet.dashboard.metrics import Metrics
from nixfleet.dashboard.middleware import BodyLimit, SecurityHeaders
from nixfleet.dashboard.notifier import Notifier
from nixfleet.dashboard.routes import (
    agent_ws,
    audit,
    auth,
    commands,
    events,
    health,
    hosts,
    monitoring,
    pages,
    security,
)
from nixfleet.dashboard.security_log import SecurityLog
from nixfleet.dashboard.sse import Broadcaster
from nixfleet.storage import hosts as host_store
from nixfleet.storage.bus import LocalBus
from nixfleet.storage.db import Database

log = logging.getLogger("nixfleet.dashboard")
_HERE = Path(__file__).parent
SWEEP_EVERY_S = 2.0


async def _sweeper(fleet: Fleet, events: EventStore) -> None:
    while True:
        try:
            await fleet.sweep()
            await events.prune_if_due()
        except Exception:
            log.exception("dashboard: sweep failed")
        await asyncio.sleep(SWEEP_EVERY_S)


def _wire_monitoring(ctx: Context) -> None:
    """Subscribe the metrics, the event store, the audit log and the alerts; start them."""
    ctx.security.subscribe(ctx.metrics.on_security_event)
    ctx.security.subscribe(ctx.events)
    ctx.security.subscribe(ctx.audit.on_security_event)
    ctx.security.subscribe(ctx.alerts)
    ctx.fleet.finished_hooks.append(ctx.metrics.on_command_finished)
    ctx.events.worker.start()
    ctx.audit.worker.start()
    ctx.alerts.notifier.start()
    ctx.alerts.start()


def create_app(settings: Settings) -> FastAPI:
    """Return the dashboard app; storage opens and the sweeper starts in its lifespan."""
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    rules = load_rules(settings.alert_rules_file)  # a bad rules file fails start-up

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.db_url)
        bus = LocalBus()
        fleet = Fleet(settings, db, bus)
        hub = Hub(fleet)
        broadcaster = Broadcaster(bus, settings.sse_queue_size)
        notifier = Notifier(
            settings.alert_url_list, settings.alert_allow_private, settings.alert_retries
        )
        ctx = Context(
            settings,
            db,
            bus,
            fleet,
            hub,
            broadcaster,
            templates,
            SecurityLog(),
            Metrics(hub, broadcaster),
            EventStore(db, bus, settings.security_event_retention_days),
            AuditLog(db),
            Alerts(rules, notifier, bus),
        )
        app.state.ctx = ctx
        _wire_monitoring(ctx)
        await host_store.mark_all_offline(db)
        await fleet.refresh_target(force=True)
        sweeper = asyncio.create_task(_sweeper(fleet, ctx.events))
        try:
            yield
        finally:
            sweeper.cancel()
            ctx.hub.close()
            ctx.broadcaster.close()
            await ctx.alerts.shutdown()
            await notifier.shutdown()
            await ctx.events.worker.shutdown()
            await ctx.audit.worker.shutdown()
            await db.close()

    app = FastAPI(
        title="NixFleet", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    errors.install(app)
    for module in (
        health,
        auth,
        pages,
        hosts,
        commands,
        events,
        agent_ws,
        monitoring,
        security,
        audit,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders, https=settings.secure_cookies)
    return app
