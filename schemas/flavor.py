"""Which storage flavour a database gets: TimescaleDB when the extension can be
loaded (or is demanded), plain PostgreSQL otherwise.  Detected, never assumed: the
same migrations run on a laptop's stock PostgreSQL and on the production image."""

from __future__ import annotations

from typing import Any


class TimescaleUnavailable(RuntimeError):
    pass


def timescale_available(conn: Any) -> bool:
    row = conn.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') "
        "OR EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
    ).first()
    return bool(row and row[0])


def timescale_wanted(conn: Any, mode: str) -> bool:
    if mode == "off":
        return False
    available = timescale_available(conn)
    if mode == "on" and not available:
        raise TimescaleUnavailable(
            "METRICX_TIMESCALEDB=on but the timescaledb extension is not available in this "
            "PostgreSQL server (install it, or use METRICX_TIMESCALEDB=auto)"
        )
    return available


def timescale_installed(conn: Any) -> bool:
    row = conn.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").first()
    return row is not None
