"""Liveness and readiness (database, Redis, the pipeline's last commit); no tenant data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import redis
from fastapi import Request
from fastapi.responses import JSONResponse

from ground.settings import Settings
from serving.container import services_of
from serving.json_route import api_router

router = api_router(tags=["health"])


def readiness(settings: Settings) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    ok = True
    try:
        with psycopg.connect(settings.database.libpq_url, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT max(committed_at), sum(next_offset) FROM pipeline_progress WHERE consumer = 'pipeline'"
            ).fetchone()
        last = row[0] if row else None
        checks["database"] = "ok"
        checks["pipeline_last_commit"] = last.isoformat() if last else None
        checks["pipeline_commit_age_s"] = (
            round((datetime.now(UTC) - last).total_seconds(), 1) if last else None
        )
    except psycopg.Error as exc:
        ok = False
        checks["database"] = f"error: {str(exc).strip()}"
    try:
        client = redis.Redis.from_url(settings.redis.url, socket_timeout=3, socket_connect_timeout=3)
        client.ping()
        client.close()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        ok = False
        checks["redis"] = f"error: {exc}"
    return ok, checks


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    ok, checks = readiness(services_of(request.app).settings)
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, status_code=200 if ok else 503)
