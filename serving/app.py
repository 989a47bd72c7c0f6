"""The HTTP server.  This stage serves health and readiness only: no tenant data is
exposed until authentication and workspace scoping exist (the dashboard issue)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg
import redis
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from metricx.settings import Settings, load_settings


def readiness(settings: Settings) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    ok = True
    try:
        with psycopg.connect(settings.libpq_url, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT max(committed_at), sum(next_offset) FROM pipeline_progress WHERE consumer = 'pipeline'"
            ).fetchone()
        last = row[0] if row else None
        checks["database"] = "ok"
        checks["pipeline_last_commit"] = last.isoformat() if last else None
        checks["pipeline_commit_age_s"] = (
            round((datetime.now(timezone.utc) - last).total_seconds(), 1) if last else None
        )
    except psycopg.Error as exc:
        ok = False
        checks["database"] = f"error: {str(exc).strip()}"
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
        client.ping()
        client.close()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        ok = False
        checks["redis"] = f"error: {exc}"
    return ok, checks


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(title="metricx", version="0.1.0")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ok, checks = readiness(settings)
        return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)

    return app
