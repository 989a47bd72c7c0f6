"""What the app's routes use, in one typed container instead of ``app.state``'s untyped
bag: built by ``serving.app.create_app``; what lives with the event loop (the live
stream hub) and what needs closing (pools, the dashboard's threads, the publisher) is
started and stopped by the app's lifespan.  Routes reach it through the ``Annotated``
dependencies of ``serving.deps``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from adapters.crypto import Keyring
from ground.settings import Settings
from serving.auth import Verifier
from serving.dashboard_service import DashboardService
from serving.db import ConnectionPool
from serving.rules_store import RulePublisher
from serving.stream import Hub
from serving.stream_guard import Clock, MembershipCache


@dataclass
class AppServices:
    settings: Settings
    verifier: Verifier
    pool: ConnectionPool  # read-only request connections
    write_pool: ConnectionPool  # rules and channels are written rarely: a few connections
    rules_publisher: RulePublisher
    memberships: MembershipCache
    dashboard: DashboardService
    clock: Clock  # wall time in seconds, for what ends with a token's exp (tests move it)
    hub: Hub | None = None  # the live stream's Redis reader: one per running event loop
    keyring: Keyring | None = None  # channel secrets; loaded on first use (a server without keys still serves)

    def live_hub(self) -> Hub:
        if self.hub is None:
            raise RuntimeError("the live stream hub runs only while the app runs (its lifespan)")
        return self.hub


def services_of(app: FastAPI | object) -> AppServices:
    """The services of an app ``serving.app.create_app`` built (a test client's ``app``
    is typed as any ASGI app)."""
    services = getattr(getattr(app, "state", None), "services", None)
    if not isinstance(services, AppServices):
        raise TypeError("not an app built by serving.app.create_app")
    return services
