"""The server's side of operations: ``GET /metrics`` (Prometheus), request latency by
route, the live stream's clients, and dependency failures answered as 503s.

Why route templates: the raw path carries ids (``/rules/<uuid>``), which would make
one time series per id; the template the router matched does not.  Why 503 for a lost
database or Redis: the request was fine and may simply be retried (``Retry-After``),
and a 500 would page someone for a restart they are already watching.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

import psycopg
import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ground.metrics import HTTP_SECONDS

log = logging.getLogger(__name__)


class StreamHub(Protocol):
    dropped_total: int

    def client_count(self) -> int: ...


_HUBS: weakref.WeakSet[Any] = weakref.WeakSet()


class _StreamCollector(Collector):
    """Read at scrape time from every live hub of this process (one per app)."""

    def collect(self) -> Iterable[Metric]:
        hubs = list(_HUBS)
        yield GaugeMetricFamily("metricx_sse_clients", "Clients connected to the live stream",
                                value=sum(h.client_count() for h in hubs))
        yield CounterMetricFamily("metricx_sse_dropped", "Stream clients dropped for falling behind",
                                  value=sum(h.dropped_total for h in hubs))


REGISTRY.register(_StreamCollector())


def watch_hub(hub: StreamHub) -> None:
    _HUBS.add(hub)


class RequestMetrics:
    """Pure ASGI (no body buffering, streams untouched): observes each request once,
    when its response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        done = False

        def observe(status: int) -> None:
            nonlocal done
            done = True
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_SECONDS.labels(route, scope["method"], str(status)).observe(time.perf_counter() - start)

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                observe(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if not done:
                observe(500)
            raise


def install(app: FastAPI) -> None:
    app.add_middleware(RequestMetrics)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(psycopg.OperationalError)
    def _database_away(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("request failed: database unavailable", extra={"path": request.url.path,
                                                                   "error": str(exc).strip()[:300]})
        return JSONResponse({"detail": "database unavailable, retry shortly"}, status_code=503,
                            headers={"Retry-After": "2"})

    @app.exception_handler(redis.RedisError)
    def _redis_away(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("request failed: redis unavailable", extra={"path": request.url.path, "error": str(exc)[:300]})
        return JSONResponse({"detail": "live updates unavailable, retry shortly"}, status_code=503,
                            headers={"Retry-After": "2"})
