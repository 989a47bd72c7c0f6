"""The migrations on both storage flavours of one server: a database asked for plain
PostgreSQL (``METRICX_TIMESCALEDB=off``) gets views where TimescaleDB has continuous
aggregates, under the same names, and both come down to nothing and up again.

The plain lane's other checks run in their own modules, parametrized by flavour: exact
totals through the whole pipeline (``test_pipeline_e2e``) and the README's analyst
queries (``test_analyst_queries``).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory

from schemas.migrate import alembic_config, downgrade, upgrade
from schemas.tables import metadata
from tests.databases import flavour_of, sqlalchemy_url

pytestmark = pytest.mark.services

AGGREGATES = ("metrics_hourly", "analyst_campaign_daily", "analyst_account_daily")


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def relkinds(url: str) -> dict[str, str]:
    return dict(rows(url, "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON "
                          "n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname = ANY(%s)",
                     (list(metadata.tables),)))


@pytest.mark.parametrize("database", ["timescaledb", "postgresql"], indirect=True)
def test_migrations_give_the_flavour_asked_for_and_come_down_clean(database: str,
                                                                    request: pytest.FixtureRequest) -> None:
    flavour = request.node.callspec.params["database"]
    assert flavour_of(database) == flavour
    heads = set(ScriptDirectory.from_config(alembic_config("postgresql://")).get_heads())
    assert {r[0] for r in rows(database, "SELECT version_num FROM alembic_version")} == heads

    kinds = relkinds(database)
    assert set(kinds) == set(metadata.tables)  # every table the code knows exists
    caggs = {r[0] for r in rows(database, "SELECT view_name FROM timescaledb_information.continuous_aggregates")} \
        if flavour == "timescaledb" else set()
    for name in AGGREGATES:
        if flavour == "timescaledb":
            assert name in caggs, name
        else:
            assert kinds[name] == "v", name  # computed on read, always exact
    if flavour == "postgresql":  # the stand-in that lets the analyst queries run unchanged
        assert rows(database, "SELECT time_bucket(INTERVAL '1 hour', TIMESTAMPTZ '2026-01-01 10:47Z')") == \
            rows(database, "SELECT TIMESTAMPTZ '2026-01-01 10:00Z'")

    downgrade(sqlalchemy_url(database))
    assert relkinds(database) == {}
    assert rows(database, "SELECT count(*) FROM alembic_version") == [(0,)]
    upgrade(sqlalchemy_url(database), "on" if flavour == "timescaledb" else "off")
    assert relkinds(database) == kinds
