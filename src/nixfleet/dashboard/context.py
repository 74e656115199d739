"""The parts one dashboard process is made of, built once in create_app()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nixfleet.config import Settings
from nixfleet.dashboard.fleet.hooks import PushHooks
from nixfleet.dashboard.fleet.hub import Hub
from nixfleet.dashboard.fleet.rollouts import Rollouts
from nixfleet.dashboard.fleet.service import Fleet
from nixfleet.dashboard.monitoring.alerts import Alerts
from nixfleet.dashboard.monitoring.audit_log import AuditLog
from nixfleet.dashboard.monitoring.deploy_alerts import DeployAlerts
from nixfleet.dashboard.monitoring.event_store import EventStore
from nixfleet.dashboard.monitoring.nometrics import NoMetrics
from nixfleet.dashboard.monitoring.security_log import SecurityLog
from nixfleet.dashboard.sse import Broadcaster
from nixfleet.dashboard.templating import Templates
from nixfleet.security.sessions import SessionSigner
from nixfleet.security.throttle import LoginThrottle
from nixfleet.storage.bus import EventBus
from nixfleet.storage.db import Database

if TYPE_CHECKING:
    from nixfleet.dashboard.monitoring.metrics import Metrics
    from nixfleet.dashboard.signon import SignOn


@dataclass
class Context:
    settings: Settings
    db: Database
    bus: EventBus
    fleet: Fleet
    hub: Hub
    broadcaster: Broadcaster
    templates: Templates
    security: SecurityLog
    signer: SessionSigner
    login_throttle: LoginThrottle
    metrics: Metrics | NoMetrics  # NoMetrics when nobody may scrape /metrics
    events: EventStore
    audit: AuditLog
    alerts: Alerts
    deploy_alerts: DeployAlerts
    rollouts: Rollouts
    hooks: PushHooks
    sign_on: SignOn | None = None  # single sign-on, when NIXFLEET_OIDC_ISSUER is set
