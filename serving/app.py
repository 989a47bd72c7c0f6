"""The HTTP server: health, the dashboard API, the live stream and the page.

``create_app`` is the factory uvicorn runs (``metricx serve``); tests build it with
explicit settings.  Everything except ``/healthz``, ``/readyz``, ``/metrics``, the OpenAPI
document and the static page needs a verified token and a membership in the requested workspace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ground.settings import Settings, load_settings
from serving import access_log, observability
from serving.auth import Verifier
from serving.body_limit import BodyLimit
from serving.container import AppServices
from serving.dashboard_service import DashboardService
from serving.db import ConnectionPool, PoolExhausted
from serving.deps import is_member
from serving.routes import alerts, analytics, channels, dashboard, entities, health, rules, stream
from serving.routes.health import readiness
from serving.rules_store import RulePublisher
from serving.stream import Hub
from serving.stream_guard import Clock, MembershipCache

__all__ = ["create_app", "readiness"]

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: Settings | None = None, *, clock: Clock = time.time) -> FastAPI:
    """``clock``: wall time in seconds, for what ends with a token's ``exp`` (injectable:
    tests move it instead of waiting)."""
    settings = settings or load_settings()
    serving = settings.serving
    serving.require_key_source()
    pool = ConnectionPool(settings.database.libpq_url, max_size=serving.db_pool_size)
    services = AppServices(
        settings=settings,
        verifier=Verifier.from_settings(serving, settings.dev_issuer_dir),
        pool=pool,
        write_pool=ConnectionPool(settings.database.libpq_url, max_size=4, read_only=False),
        rules_publisher=RulePublisher(settings.kafka.bootstrap, settings.kafka.rules_topic),
        memberships=MembershipCache(lambda sub, ws: is_member(pool, sub, ws), ttl_s=serving.sse_recheck_s),
        dashboard=DashboardService(settings.database.libpq_url),
        clock=clock,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Hub(settings.redis.url, queue_size=serving.sse_queue_size, block_ms=serving.sse_block_ms)
        services.hub = hub
        observability.watch_hub(hub)
        services.dashboard.start()
        await hub.start()
        log.info("serving", extra={"issuer": serving.auth_issuer, "algorithm": serving.auth_algorithm,
                                   "dev_issuer": serving.dev_issuer})
        try:
            yield
        finally:
            await hub.stop()
            services.hub = None
            services.dashboard.close()
            services.pool.close()
            services.write_pool.close()
            services.rules_publisher.close()

    app = FastAPI(title="metricx", version="0.1.0", lifespan=lifespan,
                  description="Real-time ad analytics. Authenticate with `Authorization: Bearer <JWT>`.")
    app.state.services = services

    @app.exception_handler(PoolExhausted)
    def _busy(request: Request, exc: PoolExhausted) -> JSONResponse:
        return JSONResponse({"detail": "server busy, retry shortly"}, status_code=503, headers={"Retry-After": "2"})

    observability.install(app)  # /metrics, request latency, 503 for a lost database or Redis
    for r in (health.router, dashboard.router, entities.router, analytics.router, stream.router,
              rules.router, channels.router, alerts.router):
        app.include_router(r)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Outermost of our own layers: a body over the limit is refused before routing,
    # auth or parsing (only Starlette's error middleware wraps it).
    app.add_middleware(BodyLimit, max_bytes=serving.max_body_bytes)
    access_log.install()
    return app
