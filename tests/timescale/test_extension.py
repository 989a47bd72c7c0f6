"""The services' PostgreSQL runs the TimescaleDB metricx is built for, configured the way
``deploy/services.sh`` promises: the pinned release with its community features, and a
background scheduler that runs the policies by itself (the demo relies on it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.databases import fresh_database
from tests.integration.totals import wait_until

pytestmark = [pytest.mark.services, pytest.mark.timescale]

PINNED = "2.28.3"  # deploy/timescaledb.sh builds this release


@pytest.fixture(scope="module")
def ts_database(timescale_admin_url: str) -> Iterator[str]:
    with fresh_database(timescale_admin_url, "on") as url:
        yield url


def one(url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def test_the_pinned_release_with_community_features(ts_database: str) -> None:
    assert one(ts_database, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'") == PINNED
    # 'apache' would mean no compression, no continuous aggregates' policies.
    assert one(ts_database, "SHOW timescaledb.license") == "timescale"
    assert one(ts_database, "SHOW timescaledb.telemetry_level") == "off"  # no network at run time


def test_the_background_scheduler_runs_a_refresh_policy(ts_database: str) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    with psycopg.connect(ts_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO metrics_15m VALUES (gen_random_uuid(), 'sim', 'acct', 'ad', 'ad-1', 'cmp', NULL, "
            "%s, 'USD', %s, 1.5, 10, 1, 0, 0, %s)",
            (hour.date(), hour, hour),
        )
        job = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = 'metrics_hourly'"
        ).fetchone()
        assert job is not None
        # the policy's next run, brought forward to now; the scheduler does the rest
        conn.execute("SELECT alter_job(%s, next_start => now())", (job[0],))
        mat = conn.execute(
            "SELECT materialization_hypertable_schema || '.' || materialization_hypertable_name "
            "FROM timescaledb_information.continuous_aggregates WHERE view_name = 'metrics_hourly'"
        ).fetchone()
        assert mat is not None

    def materialised() -> bool:  # the materialisation itself, not the real-time view
        return bool(one(ts_database, f"SELECT count(*) FROM {mat[0]} WHERE bucket_start = %s", (hour,)))

    wait_until(materialised, 120, "the scheduler to run metrics_hourly's refresh policy")
    assert one(ts_database, "SELECT last_run_status FROM timescaledb_information.job_stats WHERE job_id = %s",
               (job[0],)) == "Success"
