"""The storage is described three times on purpose: the Alembic migrations (the DDL),
``schemas.tables`` (SQLAlchemy Core, for queries) and ``schemas.columns`` (the writer's
column orders).  They must agree: checked here against a freshly migrated database."""

from __future__ import annotations

from typing import Any

import psycopg

from schemas import columns
from schemas.tables import metadata
from tests.integration.conftest import database, services  # noqa: F401 - fixtures


def described(url: str) -> dict[str, dict[str, bool]]:
    """table or view -> column -> nullable, as the migrated database has them."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name, column_name, is_nullable = 'YES' FROM information_schema.columns "
                            "WHERE table_schema = 'public'").fetchall()
    out: dict[str, dict[str, bool]] = {}
    for table, column, nullable in rows:
        out.setdefault(table, {})[column] = nullable
    return out


def primary_key(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows: list[Any] = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary", (table,)).fetchall()
    return sorted(r[0] for r in rows)


def test_every_sqlalchemy_table_is_in_the_migrated_database_column_for_column(database: str) -> None:  # noqa: F811
    db = described(database)
    for table in metadata.sorted_tables:
        assert table.name in db, f"{table.name}: not created by the migrations"
        mine = {c.name: bool(c.nullable) for c in table.columns}
        theirs = {c: db[table.name][c] for c in mine if c in db[table.name]}
        assert sorted(mine) == sorted(theirs), f"{table.name}: columns the migrations do not create"
        if table.name not in ("metrics_hourly", "analyst_campaign_daily", "analyst_account_daily"):  # views
            assert mine == theirs, f"{table.name}: nullability differs from the migrations"
            if table.primary_key.columns:
                assert sorted(c.name for c in table.primary_key.columns) == primary_key(database, table.name)


def test_the_writers_column_orders_name_real_columns_and_keys(database: str) -> None:  # noqa: F811
    db = described(database)
    for table, cols, key in (("insight_snapshots", columns.SNAPSHOT_COLUMNS, columns.SNAPSHOT_KEY),
                             ("metric_deltas", columns.DELTA_COLUMNS, columns.SNAPSHOT_KEY),
                             ("metrics_15m", columns.BUCKET_COLUMNS, columns.BUCKET_KEY),
                             ("metrics_daily", columns.DAILY_COLUMNS, columns.SERIES_KEY),
                             ("pipeline_progress", columns.PROGRESS_COLUMNS, columns.PROGRESS_KEY)):
        assert set(cols) <= set(db[table]), f"{table}: {sorted(set(cols) - set(db[table]))}"
        assert sorted(key) == primary_key(database, table), table
