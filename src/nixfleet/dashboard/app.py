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
from nixfleet.dashboard.accesslog import AccessLog
from nixfleet.dashboard.context import Context
from nixfleet.dashboard.fleet import Fleet
from nixfleet.dashboard.hub import Hub
from nixfleet.dashboard.middleware import BodyLimit, CatchAll, SecurityHeaders
from nixfleet.dashboard.ratelimit import RateLimit
from nixfleet.dashboard.routes import (
    agent_ws,
    auth,
    commands,
    enroll,
    events,
    health,
    hosts,
    pages,
)
from nixfleet.dashboard.security_log import SecurityLog
from nixfleet.dashboard.sse import Broadcaster
from nixfleet.security.sessions import SessionSigner
from nixfleet.security.throttle import LoginThrottle
from nixfleet.security.tokens import new_secret
from nixfleet.storage import hosts as host_store
from nixfleet.storage.bus import LocalBus
from nixfleet.storage.db import Database

log = logging.getLogger("nixfleet.dashboard")
_HERE = Path(__file__).parent
SWEEP_EVERY_S = 2.0


async def _sweeper(fleet: Fleet, hub: Hub) -> None:
    while True:
        try:
            await fleet.sweep()
            await hub.recheck_credentials()
        except Exception:
            log.exception("dashboard: sweep failed")
        await asyncio.sleep(SWEEP_EVERY_S)


def _session_secrets(settings: Settings) -> list[str]:
    """Return the session signing secrets; a demo without any gets one for this process."""
    configured = [s.get_secret_value() for s in settings.session_secrets]
    if configured:
        return configured
    log.warning("dashboard: no NIXFLEET_SESSION_SECRETS (demo): sessions end at restart")
    return [new_secret()]


def create_app(settings: Settings) -> FastAPI:
    """Return the dashboard app; storage opens and the sweeper starts in its lifespan."""
    templates = Jinja2Templates(directory=str(_HERE / "templates"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.db_url)
        bus = LocalBus()
        fleet = Fleet(settings, db, bus)
        ctx = Context(
            settings,
            db,
            bus,
            fleet,
            Hub(fleet),
            Broadcaster(bus, settings),
            templates,
            SecurityLog(),
            signer=SessionSigner(_session_secrets(settings)),
            login_throttle=LoginThrottle(
                settings.login_free_failures,
                settings.login_base_delay_s,
                settings.login_max_delay_s,
            ),
        )
        app.state.ctx = ctx
        await host_store.mark_all_offline(db)
        await fleet.refresh_target(force=True)
        sweeper = asyncio.create_task(_sweeper(fleet, ctx.hub))
        try:
            yield
        finally:
            sweeper.cancel()
            ctx.hub.close()
            ctx.broadcaster.close()
            await db.close()

    app = FastAPI(
        title="NixFleet",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # "/api/hosts/" is a 404 JSON error, not a redirect that replays a DELETE elsewhere.
        redirect_slashes=False,
    )
    errors.install(app)
    for module in (health, auth, pages, hosts, commands, events, agent_ws, enroll):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    app.state.trusted_proxies = settings.trusted_networks
    # The last added runs first: AccessLog → SecurityHeaders → CatchAll → RateLimit →
    # BodyLimit → the app. The access log sees every answer, including a 429 or a 500, and
    # every answer carries the security headers.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimit, settings=settings)
    app.add_middleware(CatchAll)
    app.add_middleware(SecurityHeaders, hsts=settings.secure_cookies)
    app.add_middleware(AccessLog, enabled=settings.access_log)
    return app
