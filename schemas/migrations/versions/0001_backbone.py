"""The streaming backbone's storage: snapshots, deltas, 15-minute and daily rollups.

Same table and view names on both flavours:

=====================  ==============================  ================================
object                 TimescaleDB                     plain PostgreSQL
=====================  ==============================  ================================
insight_snapshots      hypertable (captured_at, 1 d),  table
                       compressed after 3 d, kept 90 d
metric_deltas          hypertable (captured_at, 1 d),  table
                       compressed after 3 d, kept 90 d
metrics_15m            hypertable (bucket_start, 7 d), table
                       compressed after 40 d, kept
                       400 d
metrics_hourly         continuous aggregate over       view over metrics_15m
                       metrics_15m, real-time,          (computed on read, always exact)
                       refreshed every 5 min over the
                       last 36 d (restatement window)
metrics_daily          table maintained by the         same
                       pipeline (latest cumulative
                       snapshot per series: exact)
=====================  ==============================  ================================

Restatements are written into the last 15-minute bucket of their (old) report date,
so ``metrics_15m`` chunks keep receiving writes for the whole restatement window
(35 days): they are compressed only after it, and the continuous aggregate's refresh
window covers it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import context, op

from schemas.flavor import timescale_wanted

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

IDENTITY = """
    workspace_id  uuid        NOT NULL,
    provider      text        NOT NULL,
    account_id    text        NOT NULL,
    entity_level  text        NOT NULL,
    entity_id     text        NOT NULL,
    campaign_id   text        NOT NULL,
    adset_id      text,
    report_date   date        NOT NULL,"""
MEASURES = """
    spend         numeric(24,6) NOT NULL,
    impressions   bigint        NOT NULL,
    clicks        bigint        NOT NULL,
    conversions   numeric(24,6) NOT NULL,
    revenue       numeric(24,6) NOT NULL,"""
SERIES_PK = "workspace_id, provider, account_id, entity_id, report_date"

RESTATEMENT_WINDOW_DAYS = 35
HOURLY_SELECT = """
SELECT workspace_id, provider, account_id, entity_level, entity_id, campaign_id, adset_id,
       report_date, currency,
       time_bucket(INTERVAL '1 hour', bucket_start) AS bucket_start,
       sum(spend)               AS spend,
       sum(impressions)::bigint AS impressions,
       sum(clicks)::bigint      AS clicks,
       sum(conversions)         AS conversions,
       sum(revenue)             AS revenue
FROM metrics_15m
GROUP BY workspace_id, provider, account_id, entity_level, entity_id, campaign_id, adset_id,
         report_date, currency, time_bucket(INTERVAL '1 hour', bucket_start)
"""
PLAIN_TIME_BUCKET = """
CREATE OR REPLACE FUNCTION time_bucket(bucket_width interval, ts timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT to_timestamp(floor(extract(epoch FROM ts) / extract(epoch FROM bucket_width))
                      * extract(epoch FROM bucket_width))
$$;
"""


def upgrade() -> None:
    ts = timescale_wanted(op.get_bind(), context.config.attributes.get("timescaledb", "auto"))
    if ts:
        op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")

    op.execute(f"""
CREATE TABLE insight_snapshots ({IDENTITY}
    timezone      text        NOT NULL,
    currency      text        NOT NULL,
    captured_at   timestamptz NOT NULL,{MEASURES}
    source_partition integer,
    source_offset    bigint,
    produced_at      timestamptz,
    ingested_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY ({SERIES_PK}, captured_at)
)""")
    op.execute(f"""
CREATE TABLE metric_deltas ({IDENTITY}
    currency      text        NOT NULL,
    captured_at   timestamptz NOT NULL,
    bucket_start  timestamptz NOT NULL,{MEASURES}
    PRIMARY KEY ({SERIES_PK}, captured_at)
)""")
    op.execute(f"""
CREATE TABLE metrics_15m ({IDENTITY}
    currency      text        NOT NULL,
    bucket_start  timestamptz NOT NULL,{MEASURES}
    last_captured_at timestamptz NOT NULL,
    PRIMARY KEY ({SERIES_PK}, bucket_start)
) WITH (fillfactor = 70)""")
    op.execute(f"""
CREATE TABLE metrics_daily ({IDENTITY}
    timezone      text        NOT NULL,
    currency      text        NOT NULL,{MEASURES}
    last_captured_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY ({SERIES_PK})
) WITH (fillfactor = 50)""")
    op.execute("""
CREATE TABLE pipeline_progress (
    consumer     text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    next_offset  bigint      NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, topic, partition)
)""")
    # Rollup rows are rewritten many times (every poll updates the current bucket and
    # the day); free space in each page lets PostgreSQL update them in place (HOT)
    # without touching the indexes, since no indexed column ever changes.
    op.execute("CREATE INDEX metrics_15m_ws_time ON metrics_15m (workspace_id, bucket_start DESC)")
    op.execute(
        "CREATE INDEX metrics_daily_ws_day ON metrics_daily (workspace_id, report_date, campaign_id)"
    )

    if not ts:
        op.execute(PLAIN_TIME_BUCKET)
        op.execute("CREATE VIEW metrics_hourly AS " + HOURLY_SELECT)
        return

    # Raw tables are read by series (their primary key), never by time alone: no default
    # time index, one index less to maintain per row.
    for raw in ("insight_snapshots", "metric_deltas"):
        op.execute(
            f"SELECT create_hypertable('{raw}', by_range('captured_at', INTERVAL '1 day'), "
            "create_default_indexes => false)"
        )
    op.execute("SELECT create_hypertable('metrics_15m', by_range('bucket_start', INTERVAL '7 days'))")
    for table, order in (
        ("insight_snapshots", "entity_id, report_date, captured_at DESC"),
        ("metric_deltas", "entity_id, report_date, captured_at DESC"),
        ("metrics_15m", "entity_id, report_date, bucket_start DESC"),
    ):
        op.execute(
            f"ALTER TABLE {table} SET (timescaledb.compress, "
            f"timescaledb.compress_segmentby = 'workspace_id, provider, account_id', "
            f"timescaledb.compress_orderby = '{order}')"
        )
    op.execute("SELECT add_compression_policy('insight_snapshots', INTERVAL '3 days')")
    op.execute("SELECT add_compression_policy('metric_deltas', INTERVAL '3 days')")
    op.execute(
        f"SELECT add_compression_policy('metrics_15m', INTERVAL '{RESTATEMENT_WINDOW_DAYS + 5} days')"
    )
    op.execute("SELECT add_retention_policy('insight_snapshots', INTERVAL '90 days')")
    op.execute("SELECT add_retention_policy('metric_deltas', INTERVAL '90 days')")
    op.execute("SELECT add_retention_policy('metrics_15m', INTERVAL '400 days')")

    # A continuous aggregate cannot be created inside a transaction block.
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE MATERIALIZED VIEW metrics_hourly WITH (timescaledb.continuous, "
            "timescaledb.materialized_only = false) AS " + HOURLY_SELECT + " WITH NO DATA"
        )
    op.execute(
        "SELECT add_continuous_aggregate_policy('metrics_hourly', "
        f"start_offset => INTERVAL '{RESTATEMENT_WINDOW_DAYS + 1} days', "
        "end_offset => INTERVAL '15 minutes', schedule_interval => INTERVAL '5 minutes')"
    )
    op.execute("SELECT add_retention_policy('metrics_hourly', INTERVAL '400 days')")


def downgrade() -> None:
    bind = op.get_bind()
    is_cagg = bind.exec_driver_sql(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'metrics_hourly' AND c.relkind = 'v' "
        "AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
    ).first()
    if is_cagg:
        with op.get_context().autocommit_block():
            op.execute("DROP MATERIALIZED VIEW IF EXISTS metrics_hourly CASCADE")
    op.execute("DROP VIEW IF EXISTS metrics_hourly")
    for t in ("pipeline_progress", "metrics_daily", "metrics_15m", "metric_deltas", "insight_snapshots"):
        op.execute(f"DROP TABLE IF EXISTS {t} CASCADE")
    if not is_cagg:
        # Our stand-in exists on plain PostgreSQL only; TimescaleDB's own belongs to the
        # extension and must not (cannot) be dropped.
        has_ts = bind.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").first()
        if not has_ts:
            op.execute("DROP FUNCTION IF EXISTS time_bucket(interval, timestamptz)")
