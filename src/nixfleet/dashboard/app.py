"""create_app(settings): the dashboard's ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from nixfleet.config import Settings
from nixfleet.core.errors import NotFound
from nixfleet.dashboard import access, contract
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.fleet.codec import FleetCodec
from nixfleet.dashboard.fleet.hooks import PushHooks
from nixfleet.dashboard.fleet.hub import Hub
from nixfleet.dashboard.fleet.presence import Presence
from nixfleet.dashboard.fleet.rollouts import Rollouts
from nixfleet.dashboard.fleet.service import Fleet
from nixfleet.dashboard.fleet.throttling import SharedLoginThrottle
from nixfleet.dashboard.monitoring.alerts import Alerts, load_deploy_rules, load_rules
from nixfleet.dashboard.monitoring.audit_log import AuditLog
from nixfleet.dashboard.monitoring.deploy_alerts import DeployAlerts
from nixfleet.dashboard.monitoring.event_store import EventStore
from nixfleet.dashboard.monitoring.nometrics import NoMetrics
from nixfleet.dashboard.monitoring.notifier import Notifier
from nixfleet.dashboard.monitoring.security_log import SecurityLog
from nixfleet.dashboard.pipeline import errors
from nixfleet.dashboard.pipeline.accesslog import AccessLog
from nixfleet.dashboard.pipeline.middleware import (
    AllowedHosts,
    BodyLimit,
    CatchAll,
    SecurityHeaders,
)
from nixfleet.dashboard.pipeline.ratelimit import RateLimit
from nixfleet.dashboard.responses import FiniteJSONResponse
from nixfleet.dashboard.routes import (
    agent_ws,
    audit,
    auth,
    commands,
    enroll,
    events,
    health,
    hooks,
    hosts,
    logs,
    monitoring,
    openapi,
    pages,
    rollouts,
    security,
    sso,
    tokens,
    users,
)
from nixfleet.dashboard.signon import SignOn
from nixfleet.dashboard.sse import Broadcaster
from nixfleet.dashboard.streamseats import SharedSeats
from nixfleet.dashboard.templating import Templates
from nixfleet.security.sessions import SessionSigner
from nixfleet.security.throttle import LoginThrottle
from nixfleet.security.tokens import new_secret
from nixfleet.storage import users as user_store
from nixfleet.storage.bus import LocalBus
from nixfleet.storage.db import Database, PoolSize, log_failure
from nixfleet.storage.replicas import new_replica_id
from nixfleet.storage.streamseats import Caps

if TYPE_CHECKING:
    from nixfleet.dashboard.monitoring.metrics import Metrics
    from nixfleet.storage.pgbus import PgBus
    from nixfleet.storage.replicas import Census

log = logging.getLogger("nixfleet.dashboard")
ROUTE_MODULES = (
    health,
    auth,
    sso,
    pages,
    hosts,
    commands,
    logs,
    events,
    enroll,
    monitoring,
    security,
    audit,
    rollouts,
    hooks,
    users,
    tokens,
    openapi,
)
_HERE = Path(__file__).parent
SWEEP_EVERY_S = 2.0


async def _sweeper(fleet: Fleet, hub: Hub, events: EventStore, streams: Broadcaster) -> None:
    while True:
        try:
            await fleet.sweep()
            await hub.recheck_credentials()
            await streams.end_dead_sessions(fleet.db)
            await events.prune_if_due()
            await fleet.prune_output_if_due()
        except Exception as exc:  # the next sweep tries again
            log_failure(log, "dashboard: sweep", exc)
        await asyncio.sleep(SWEEP_EVERY_S)


def _session_secrets(settings: Settings) -> list[str]:
    """Return the session signing secrets; a demo without any gets one for this process."""
    configured = [s.get_secret_value() for s in settings.session_secrets]
    if configured:
        return configured
    log.warning("dashboard: no NIXFLEET_SESSION_SECRETS (demo): sessions end at restart")
    return [new_secret()]


def _wire_monitoring(ctx: Context) -> None:
    """Subscribe the metrics, the event store, the audit log and the alerts; start them."""
    ctx.security.subscribe(ctx.metrics.on_security_event)
    ctx.security.subscribe(ctx.events)
    ctx.security.subscribe(ctx.audit.on_security_event)
    ctx.security.subscribe(ctx.alerts)
    ctx.fleet.finished_hooks.append(ctx.metrics.on_command_finished)
    ctx.fleet.finished_hooks.append(ctx.deploy_alerts.on_command_finished)
    ctx.events.worker.start()
    ctx.audit.worker.start()
    ctx.alerts.notifier.start()
    ctx.alerts.start()
    ctx.deploy_alerts.start()


def _metrics(
    settings: Settings,
    hub: Hub,
    broadcaster: Broadcaster,
    replica: str,
    census: Callable[[], Census | None],
) -> Metrics | NoMetrics:
    """Return the process's metrics; nothing is counted when nobody may scrape them."""
    if not settings.metrics_enabled:
        return NoMetrics()
    from nixfleet.dashboard.monitoring.metrics import Metrics

    return Metrics(hub, broadcaster, replica, census)


def _login_throttle(settings: Settings, bus: LocalBus | PgBus, replica: str) -> LoginThrottle:
    """Return the login throttle: this process's alone, or kept alike on every replica."""
    limits = {
        "free_failures": settings.login_free_failures,
        "base_delay_s": settings.login_base_delay_s,
        "max_delay_s": settings.login_max_delay_s,
    }
    # PgBus is imported only where PostgreSQL is used: test for the other kind.
    if not isinstance(bus, LocalBus):
        return SharedLoginThrottle(bus, replica, **limits)
    return LoginThrottle(**limits)  # type: ignore[arg-type]


def _stream_seats(
    settings: Settings, db: Database, replica: str, broadcaster: Broadcaster
) -> SharedSeats:
    """Return the event-stream caps counted across replicas, in the database."""
    caps = Caps(settings.sse_max_per_session, settings.sse_max_per_address, settings.sse_max_total)
    return SharedSeats(
        db,
        replica,
        caps,
        settings.replica_lease_s,
        lambda: [sub.seat for sub in broadcaster.subscribers],
    )


def create_app(settings: Settings) -> FastAPI:
    """Return the dashboard app; storage opens and the sweeper starts in its lifespan."""
    templates = Templates(_HERE / "templates")  # Jinja is loaded on the first page
    rules = load_rules(settings.alert_rules_file)  # a bad rules file fails start-up
    deploy_rules = load_deploy_rules(settings.alert_rules_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = PoolSize(
            settings.db_pool_size, settings.db_pool_overflow, settings.db_pool_timeout_s
        )
        db = Database(settings.db_url, settings.db_busy_timeout_s, pool)
        replica = settings.replica_id or new_replica_id()
        bus: LocalBus | PgBus
        if db.is_sqlite:
            bus = LocalBus()
        else:
            # psycopg is loaded only for PostgreSQL (~1.5 MiB a SQLite dashboard never uses).
            from nixfleet.storage.pgbus import PgBus

            bus = PgBus(db, replica)
        fleet = Fleet(settings, db, bus, replica=replica)
        hub = Hub(fleet)
        broadcaster = Broadcaster(bus, settings)
        notifier = Notifier(
            settings.alert_url_list, settings.alert_allow_private, settings.alert_retries
        )
        deploy_alerts = DeployAlerts(deploy_rules, notifier, db)
        rollouts = Rollouts(fleet, deploy_alerts.rollout_ended)
        presence: Presence | None = None
        seats: SharedSeats | None = None
        ctx = Context(
            settings,
            db,
            bus,
            fleet,
            hub,
            broadcaster,
            templates,
            SecurityLog(),
            signer=SessionSigner(_session_secrets(settings)),
            login_throttle=_login_throttle(settings, bus, replica),
            metrics=_metrics(
                settings,
                hub,
                broadcaster,
                "" if db.is_sqlite else replica,
                lambda: presence.census if presence else None,  # presence comes below
            ),
            events=EventStore(db, bus, settings.security_event_retention_days),
            audit=AuditLog(
                db,
                settings.audit_key,
                settings.audit_anchor_path,
                settings.audit_write_timeout_s,
            ),
            alerts=Alerts(rules, notifier, bus),
            deploy_alerts=deploy_alerts,
            rollouts=rollouts,
            hooks=PushHooks(settings, fleet, rollouts),
            sign_on=SignOn(settings) if settings.oidc_enabled else None,
        )
        app.state.ctx = ctx
        _wire_monitoring(ctx)
        if not isinstance(bus, LocalBus):
            await bus.start(FleetCodec(fleet))
            presence = Presence(fleet, hub, settings.replica_lease_s)
            await presence.startup()
            seats = broadcaster.seats = _stream_seats(settings, db, replica, broadcaster)
            seats.start()
        else:
            await fleet.startup()  # the only process: no agent can be connected yet
        await fleet.refresh_target(force=True)
        if await user_store.seed_admin(
            db,
            settings.admin_user,
            settings.admin_password_hash.get_secret_value(),
            settings.totp_secret.get_secret_value(),
        ):
            log.info("dashboard: %s is the first user (admin)", settings.admin_user)
        elif settings.demo:
            # The demo prints a password for this run only: the run's hash replaces the last
            # run's, which would otherwise still open the kept database.
            with contextlib.suppress(NotFound):
                await user_store.change(
                    db,
                    settings.admin_user,
                    password_hash=settings.admin_password_hash.get_secret_value(),
                )
        sweeper = asyncio.create_task(_sweeper(fleet, ctx.hub, ctx.events, ctx.broadcaster))
        ctx.rollouts.start()
        try:
            yield
        finally:
            sweeper.cancel()
            await ctx.rollouts.shutdown()
            ctx.hub.close()
            ctx.broadcaster.close()
            await ctx.alerts.shutdown()
            await ctx.deploy_alerts.shutdown()
            await notifier.shutdown()
            await ctx.events.worker.shutdown()
            await ctx.audit.worker.shutdown()
            if seats is not None:
                await seats.shutdown()
            if presence is not None:
                await presence.shutdown()
            if not isinstance(bus, LocalBus):
                await bus.close()
            await db.close()

    app = FastAPI(
        title="NixFleet",
        lifespan=lifespan,
        default_response_class=FiniteJSONResponse,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # "/api/hosts/" is a 404 JSON error, not a redirect that replays a DELETE elsewhere.
        redirect_slashes=False,
        # Before every route's own dependencies: the role its line in access.NEEDS names.
        dependencies=[Depends(access.authorize)],
    )
    errors.install(app)
    access.install(app)
    contract.install(app)
    for module in ROUTE_MODULES:
        module.router.add_to(app.router)  # built here, once (routetable.py)
    access.check_routes(app.routes)  # a route without a declared role fails start-up
    app.state.route_keys = access.route_keys(app.routes)  # for Allow
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    app.state.trusted_proxies = settings.trusted_networks
    # The last added runs first: AccessLog → SecurityHeaders → AllowedHosts → CatchAll →
    # RateLimit → BodyLimit → the agents' WebSocket, or the app. The access log sees every
    # answer, including a 421, a 429 or a 500, and every answer carries the security headers.
    app.add_middleware(agent_ws.ServeAgentsFirst)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimit, settings=settings)
    app.add_middleware(CatchAll)
    app.add_middleware(AllowedHosts, names=settings.allowed_host_names)
    app.add_middleware(SecurityHeaders, hsts=settings.secure_cookies)
    app.add_middleware(AccessLog, enabled=settings.access_log)
    return app
