"""Fresh, migrated databases on the services' PostgreSQL, in either storage flavour.

The flavour is per database (``schemas.flavor``): on one server that preloads
TimescaleDB, a database migrated with ``METRICX_TIMESCALEDB=off`` is plain PostgreSQL.
So the TimescaleDB lane and the plain lane share the server, each test with databases
of its own.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from sqlalchemy import create_engine, pool

from schemas.flavor import TimescaleUnavailable, choose, server_facts
from schemas.migrate import upgrade

# The names a test may ask for, and the METRICX_TIMESCALEDB mode that gives each.
FLAVOURS = {"timescaledb": "on", "postgresql": "off"}


def with_db(url: str, name: str) -> str:
    return re.sub(r"/[^/?]+(\?|$)", f"/{name}\\1", url, count=1) if "/" in url.split("@")[-1] else url + "/" + name


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextlib.contextmanager
def fresh_database(admin_url: str, mode: str = "auto") -> Iterator[str]:
    """A new database migrated with ``METRICX_TIMESCALEDB=mode``; its libpq URL.  Dropped
    afterwards (with its TimescaleDB scheduler, if any)."""
    name = f"metricx_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_db(admin_url, name)
    try:
        upgrade(sqlalchemy_url(url), mode)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def timescale_problem(url: str) -> str | None:
    """Why the server at ``url`` cannot give a database the TimescaleDB flavour (None
    when it can), in ``schemas.flavor``'s words, which say what to change."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            choose("on", server_facts(conn))
    except TimescaleUnavailable as exc:
        return str(exc)
    finally:
        engine.dispose()
    return None


def flavour_of(url: str) -> str:
    with psycopg.connect(url) as conn:
        row: Any = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return "timescaledb" if row[0] else "postgresql"


def pause_jobs(url: str) -> list[int]:
    """Take this database's TimescaleDB policies off the background scheduler, so a test
    runs each one itself (``CALL run_job``) at the moment it chooses; their ids."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL ORDER BY 1"
        ).fetchall()
        for (job,) in rows:
            conn.execute("SELECT alter_job(%s, scheduled => false)", (job,))
    return [r[0] for r in rows]


def refresh_aggregates(url: str) -> None:
    """Materialise every continuous aggregate in full, lower levels first (what the
    refresh policies converge to); nothing on plain PostgreSQL, whose views are exact."""
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            return
        views = conn.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates c "
            "JOIN _timescaledb_catalog.continuous_agg a ON a.user_view_name = c.view_name "
            "ORDER BY a.mat_hypertable_id"
        ).fetchall()
        for (view,) in views:
            conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
