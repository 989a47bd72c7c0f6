"""The tslite server is a real TimescaleDB (hypertables, compression, continuous
aggregates with real-time aggregation, policies), and its one-connection-at-a-time
wire-protocol front behaves like a PostgreSQL server for psycopg."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.timescale

BASE = datetime(2024, 3, 1, tzinfo=UTC)  # all raw data is old: policies see it as such
PLATFORMS = ("google", "meta", "tiktok")
EXTERNAL = bool(os.environ.get("TSLITE_DSN"))  # a real server, not tslite
Conn = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def schema(tslite_dsn: str) -> Iterator[str]:
    """A schema of this test's own (the server is shared by the session), dropped after."""
    name = f"smoke_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(tslite_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(tslite_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def connect(dsn: str, schema: str) -> Conn:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(f"SET search_path = {schema}, public")
    return conn


def hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


Row = tuple[datetime, int, str, int, int, Decimal]
Key = tuple[datetime, int, str]
Totals = dict[Key, tuple[int, int, Decimal, int]]


def make_rows(rng: random.Random, start: datetime, hours: int, n: int) -> list[Row]:
    seen: set[Key] = set()
    rows: list[Row] = []
    while len(rows) < n:
        ts = start + timedelta(seconds=rng.randrange(hours * 3600))
        key = (ts, rng.randint(1, 4), rng.choice(PLATFORMS))
        if key in seen:
            continue
        seen.add(key)
        imps = rng.randint(0, 5000)
        rows.append((*key, imps, rng.randint(0, imps // 10), Decimal(rng.randint(0, 99999)) / 100))
    return rows


def python_totals(rows: list[Row]) -> Totals:
    """Hourly totals per (campaign, platform), computed here from the raw rows."""
    acc: Totals = {}
    for ts, campaign, platform, imps, clicks, spend in rows:
        key = (hour(ts), campaign, platform)
        i, k, s, n = acc.get(key, (0, 0, Decimal(0), 0))
        acc[key] = (i + imps, k + clicks, s + spend, n + 1)
    return acc


def cagg_totals(conn: Conn) -> Totals:
    rows = conn.execute(
        "SELECT bucket, campaign_id, platform, impressions, clicks, spend, n FROM events_hourly"
    ).fetchall()
    return {(b, c, p): (int(i), int(k), Decimal(s), int(n)) for b, c, p, i, k, s, n in rows}


def test_extension_is_timescaledb_with_community_features(tslite_dsn: str) -> None:
    with psycopg.connect(tslite_dsn) as conn:
        (version,) = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone() or (None,)
        (license_,) = conn.execute("SHOW timescaledb.license").fetchone() or (None,)
    assert version is not None and tuple(int(x) for x in version.split("-")[0].split(".")[:2]) >= (
        2,
        23,
    )
    # 'apache' would mean no compression / continuous-aggregate policies.
    assert license_ == "timescale"


def test_hypertable_cagg_policies_and_realtime(tslite_dsn: str, schema: str) -> None:
    rng = random.Random(20240301)
    rows = make_rows(rng, BASE, hours=72, n=600)
    with connect(tslite_dsn, schema) as conn:
        conn.execute(
            """CREATE TABLE events (
                   ts          timestamptz   NOT NULL,
                   campaign_id integer       NOT NULL,
                   platform    text          NOT NULL,
                   impressions bigint        NOT NULL,
                   clicks      bigint        NOT NULL,
                   spend       numeric(12,2) NOT NULL,
                   PRIMARY KEY (campaign_id, platform, ts))"""
        )
        conn.execute("SELECT create_hypertable('events', by_range('ts', INTERVAL '1 day'))")
        with conn.cursor() as cur:  # plain INSERTs (extended protocol, parameters)
            cur.executemany("INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s)", rows)

        # An upsert into the hypertable replaces one row.
        ts, campaign, platform, *_ = rows[0]
        conn.execute(
            """INSERT INTO events VALUES (%s, %s, %s, 7, 1, 0.70)
               ON CONFLICT (campaign_id, platform, ts)
               DO UPDATE SET impressions = excluded.impressions, clicks = excluded.clicks,
                             spend = excluded.spend""",
            (ts, campaign, platform),
        )
        rows[0] = (ts, campaign, platform, 7, 1, Decimal("0.70"))
        expected = python_totals(rows)

        ht = conn.execute(
            """SELECT num_dimensions, num_chunks FROM timescaledb_information.hypertables
               WHERE hypertable_schema = %s AND hypertable_name = 'events'""",
            (schema,),
        ).fetchone()
        assert ht == (1, 3)  # 72 hours of data in 1-day chunks

        conn.execute(
            """ALTER TABLE events SET (timescaledb.compress,
                   timescaledb.compress_segmentby = 'campaign_id, platform',
                   timescaledb.compress_orderby = 'ts DESC')"""
        )
        segmentby = conn.execute(
            """SELECT attname FROM timescaledb_information.compression_settings
               WHERE hypertable_schema = %s AND segmentby_column_index IS NOT NULL
               ORDER BY segmentby_column_index""",
            (schema,),
        ).fetchall()
        assert [r[0] for r in segmentby] == ["campaign_id", "platform"]

        conn.execute(
            """CREATE MATERIALIZED VIEW events_hourly
               WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
               SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, campaign_id, platform,
                      sum(impressions) AS impressions, sum(clicks) AS clicks,
                      sum(spend) AS spend, count(*) AS n
               FROM events GROUP BY 1, 2, 3 WITH NO DATA"""
        )
        cagg = conn.execute(
            """SELECT materialized_only, materialization_hypertable_schema,
                      materialization_hypertable_name
               FROM timescaledb_information.continuous_aggregates
               WHERE view_schema = %s AND view_name = 'events_hourly'""",
            (schema,),
        ).fetchone()
        assert cagg is not None and cagg[0] is False
        mat_table = f'"{cagg[1]}"."{cagg[2]}"'

        # Nothing materialized yet: every row comes from the real-time part.
        assert conn.execute(f"SELECT count(*) FROM {mat_table}").fetchone() == (0,)
        assert cagg_totals(conn) == expected

        refresh_job = conn.execute(
            """SELECT add_continuous_aggregate_policy('events_hourly',
                   start_offset => INTERVAL '30 days', end_offset => INTERVAL '1 hour',
                   schedule_interval => INTERVAL '5 minutes')"""
        ).fetchone()
        compress_job = conn.execute(
            "SELECT add_compression_policy('events', INTERVAL '7 days')"
        ).fetchone()
        retention_job = conn.execute(
            "SELECT add_retention_policy('events', INTERVAL '90 days')"
        ).fetchone()
        assert refresh_job and compress_job and retention_job
        jobs = conn.execute(
            """SELECT job_id, proc_name, hypertable_name, config
               FROM timescaledb_information.jobs WHERE hypertable_schema = %s ORDER BY job_id""",
            (schema,),
        ).fetchall()
        by_proc = {proc: (job_id, table, config) for job_id, proc, table, config in jobs}
        assert set(by_proc) == {
            "policy_refresh_continuous_aggregate",
            "policy_compression",
            "policy_retention",
        }
        assert by_proc["policy_refresh_continuous_aggregate"][0] == refresh_job[0]
        assert by_proc["policy_refresh_continuous_aggregate"][1] == "events_hourly"
        assert by_proc["policy_refresh_continuous_aggregate"][2]["start_offset"] == "30 days"
        assert by_proc["policy_compression"][:2] == (compress_job[0], "events")
        assert by_proc["policy_compression"][2]["compress_after"] == "7 days"
        assert by_proc["policy_retention"][:2] == (retention_job[0], "events")
        assert by_proc["policy_retention"][2]["drop_after"] == "90 days"

        conn.execute("CALL refresh_continuous_aggregate('events_hourly', NULL, NULL)")
        (materialized,) = conn.execute(f"SELECT count(*) FROM {mat_table}").fetchone() or (0,)
        assert materialized == len(expected)
        assert cagg_totals(conn) == expected

        # The same totals straight from the raw rows, in SQL.
        raw = conn.execute(
            """SELECT time_bucket(INTERVAL '1 hour', ts), campaign_id, platform,
                      sum(impressions), sum(clicks), sum(spend), count(*)
               FROM events GROUP BY 1, 2, 3"""
        ).fetchall()
        assert {(b, c, p): (int(i), int(k), s, n) for b, c, p, i, k, s, n in raw} == expected

        # A row past the watermark shows up at once (real-time aggregation)...
        late: Row = (BASE + timedelta(days=5, minutes=7), 1, "google", 11, 2, Decimal("3.30"))
        # ...while a row in an already materialized bucket waits for the next refresh.
        backfill: Row = (BASE + timedelta(minutes=59, seconds=59), 9, "google", 5, 0, Decimal(1))
        conn.execute("INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s)", late)
        conn.execute("INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s)", backfill)
        assert cagg_totals(conn) == python_totals([*rows, late])
        conn.execute(
            "CALL refresh_continuous_aggregate('events_hourly', %s, %s)",
            (BASE, BASE + timedelta(days=1)),
        )
        rows += [late, backfill]
        assert cagg_totals(conn) == python_totals(rows)

        # The compression policy, run now, compresses every (old) chunk; data unchanged.
        conn.execute("CALL run_job(%s::int)", (compress_job[0],))
        chunks = conn.execute(
            """SELECT is_compressed FROM timescaledb_information.chunks
               WHERE hypertable_schema = %s AND hypertable_name = 'events'""",
            (schema,),
        ).fetchall()
        assert len(chunks) == 4 and all(c[0] for c in chunks)
        total = conn.execute("SELECT sum(impressions), count(*) FROM events").fetchone()
        assert total == (sum(r[3] for r in rows), len(rows))
        conn.execute("CALL refresh_continuous_aggregate('events_hourly', NULL, NULL)")
        assert cagg_totals(conn) == python_totals(rows)


def test_retention_policy_drops_old_chunks(tslite_dsn: str, schema: str) -> None:
    with connect(tslite_dsn, schema) as conn:
        conn.execute("CREATE TABLE readings (ts timestamptz NOT NULL, v integer NOT NULL)")
        conn.execute("SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'))")
        conn.execute(
            """INSERT INTO readings
               SELECT now() - g * INTERVAL '1 day', g FROM generate_series(0, 9) AS g"""
        )
        (job,) = conn.execute(
            "SELECT add_retention_policy('readings', drop_after => INTERVAL '5 days')"
        ).fetchone() or (None,)
        conn.execute("CALL run_job(%s::int)", (job,))
        kept = [r[0] for r in conn.execute("SELECT v FROM readings ORDER BY v").fetchall()]
    # Whole 1-day chunks ending more than 5 days ago are dropped: those of days 6..9.
    assert kept == [0, 1, 2, 3, 4, 5]


def test_cagg_with_data_needs_autocommit(tslite_dsn: str, schema: str) -> None:
    with connect(tslite_dsn, schema) as conn:
        conn.execute("CREATE TABLE t (ts timestamptz NOT NULL, v integer)")
        conn.execute("SELECT create_hypertable('t', by_range('ts'))")
        conn.autocommit = False
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            conn.execute(
                """CREATE MATERIALIZED VIEW t_daily WITH (timescaledb.continuous) AS
                   SELECT time_bucket('1 day', ts) AS day, sum(v) FROM t GROUP BY 1"""
            )
        conn.rollback()
        conn.autocommit = True
        conn.execute(
            """CREATE MATERIALIZED VIEW t_daily WITH (timescaledb.continuous) AS
               SELECT time_bucket('1 day', ts) AS day, sum(v) FROM t GROUP BY 1"""
        )


def test_each_connection_gets_a_fresh_session(tslite_dsn: str) -> None:
    with psycopg.connect(tslite_dsn) as probe:
        defaults = [probe.execute(f"SHOW {g}").fetchone() for g in ("TimeZone", "search_path")]
    if not EXTERNAL:
        assert defaults == [("UTC",), ("public",)]

    first = psycopg.connect(tslite_dsn)
    for i in range(8):  # psycopg prepares statements from the 5th run on
        first.execute("SELECT %s::int", (i,)).fetchone()
    first.execute("SET TimeZone = 'Asia/Tokyo'")
    first.execute("SET search_path = pg_catalog")
    first.execute("CREATE TEMP TABLE scratch (x int)")  # transaction left open
    first.close()

    with psycopg.connect(tslite_dsn) as second:
        for i in range(8):
            assert second.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        assert [second.execute(f"SHOW {g}").fetchone() for g in ("TimeZone", "search_path")] == (
            defaults
        )
        assert second.execute("SELECT to_regclass('pg_temp.scratch')").fetchone() == (None,)


def test_large_statements(tslite_dsn: str) -> None:
    big = "x" * 300_000  # one protocol message over many TCP reads
    with psycopg.connect(tslite_dsn) as conn:
        assert conn.execute("SELECT length(%s::text)", (big,)).fetchone() == (len(big),)
        values = ", ".join(f"({i}, '{'y' * 100}')" for i in range(3000))
        conn.execute("CREATE TEMP TABLE wide (i int, s text)")
        conn.execute(f"INSERT INTO wide VALUES {values}")
        assert conn.execute("SELECT count(*), sum(length(s)) FROM wide").fetchone() == (
            3000,
            300_000,
        )


@pytest.mark.skipif(EXTERNAL, reason="tslite-specific limitation")
def test_copy_from_stdin_is_refused_cleanly(tslite_dsn: str) -> None:
    with psycopg.connect(tslite_dsn) as conn:
        conn.execute("CREATE TEMP TABLE c (x int)")
        with (
            pytest.raises(psycopg.errors.FeatureNotSupported),
            conn.cursor().copy("COPY c FROM STDIN") as copy,
        ):
            copy.write_row((1,))
        conn.rollback()
        # The server survived and the connection is usable.
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
