"""Which storage flavour a database gets: TimescaleDB when the server can really load the
extension (or it is demanded), plain PostgreSQL otherwise.  Detected, never assumed: the
same migrations run on a laptop's stock PostgreSQL and on the production image.

"Can really load" is more than "is available": once TimescaleDB's files are installed,
``pg_available_extensions`` lists it, yet ``CREATE EXTENSION`` fails with "must be
preloaded" unless the server was started with ``shared_preload_libraries`` naming it.
So the decision reads three facts from the server and is made by a pure function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

PRELOAD_HINT = (
    "add timescaledb to shared_preload_libraries in postgresql.conf and restart the server "
    "(deploy/services.sh does this when the extension is installed)"
)


class TimescaleUnavailable(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class ServerFacts:
    installed: bool  # CREATE EXTENSION already ran in this database
    available: bool  # the extension's files are installed on the server
    preloaded: bool  # shared_preload_libraries names timescaledb


@dataclass(frozen=True, slots=True)
class Flavour:
    timescale: bool
    note: str | None = None  # why auto chose plain PostgreSQL although files exist


def server_facts(conn: Any) -> ServerFacts:
    row = conn.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'), "
        "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), "
        "current_setting('shared_preload_libraries')"
    ).first()
    libraries = {lib.strip().strip('"') for lib in str(row[2] or "").split(",")}
    return ServerFacts(installed=bool(row[0]), available=bool(row[1]), preloaded="timescaledb" in libraries)


def choose(mode: str, facts: ServerFacts) -> Flavour:
    """The flavour for ``METRICX_TIMESCALEDB=mode`` on a server with ``facts``."""
    if mode == "off":
        return Flavour(False)
    if facts.installed or (facts.available and facts.preloaded):
        return Flavour(True)
    if not facts.available:
        reason = (
            "the timescaledb extension is not installed in this PostgreSQL server "
            "(`make setup` builds and installs it)"
        )
    else:
        reason = f"the timescaledb extension is installed but the server did not preload it: {PRELOAD_HINT}"
    if mode == "on":
        raise TimescaleUnavailable(f"METRICX_TIMESCALEDB=on but {reason}, or set METRICX_TIMESCALEDB=off")
    return Flavour(False, note=f"using plain PostgreSQL: {reason}" if facts.available else None)


def timescale_wanted(conn: Any, mode: str) -> bool:
    flavour = choose(mode, server_facts(conn))
    if flavour.note:
        log.warning(flavour.note)
    return flavour.timescale


def timescale_installed(conn: Any) -> bool:
    row = conn.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").first()
    return row is not None
