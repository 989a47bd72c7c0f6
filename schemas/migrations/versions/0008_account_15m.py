"""Account 15-minute rollup: ``metrics_account_15m``, the sums of ``metrics_15m`` per
(workspace, provider, account, report date, currency, bucket).

Why: the dashboard's intraday series (15-minute buckets for a day, hours up to a week)
is by provider, yet ``metrics_15m`` is at ad grain: a busy day of 20,000 ads is up to
~2 million rows, read on every load of the page's default view.  At account grain it
is at most 96 rows per account and day.

The pipeline maintains it in the commit transaction by *differences* of the ad rows it
rewrites (``adapters.timescale.ACCOUNT_15M``): before the ``metrics_15m`` upsert, the
rows it will overwrite are subtracted; after it, the rows it wrote are added.  Both
sides are read from ``metrics_15m`` itself, so the rollup equals ``sum(...) FROM
metrics_15m`` whatever the write was (a replay subtracts and adds the same values; an
ad whose currency changed moves between currencies).  ``ad_rows`` counts the ad rows
beneath a row, which is deleted when none is left: an account bucket exists exactly
when an ad bucket does, zero-valued polls included.

Plain PostgreSQL: a plain table.  TimescaleDB: a hypertable with ``metrics_15m``'s
chunk interval and retention, so both drop the same days.  Existing data is backfilled
here.  On the ``campaign_daily`` branch (after 0007).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

KEY = "workspace_id, provider, account_id, report_date, currency, bucket_start"
RETENTION = "400 days"  # metrics_15m's (0001)


def upgrade() -> None:
    op.execute(f"""
CREATE TABLE metrics_account_15m (
    workspace_id  uuid          NOT NULL,
    provider      text          NOT NULL,
    account_id    text          NOT NULL,
    report_date   date          NOT NULL,
    currency      text          NOT NULL,
    bucket_start  timestamptz   NOT NULL,
    spend         numeric(24,6) NOT NULL DEFAULT 0,
    impressions   bigint        NOT NULL DEFAULT 0,
    clicks        bigint        NOT NULL DEFAULT 0,
    conversions   numeric(24,6) NOT NULL DEFAULT 0,
    revenue       numeric(24,6) NOT NULL DEFAULT 0,
    ad_rows       integer       NOT NULL DEFAULT 0,
    PRIMARY KEY ({KEY})
) WITH (fillfactor = 70)""")
    # The dashboard reads a workspace's report dates.
    op.execute(
        "CREATE INDEX metrics_account_15m_ws_day ON metrics_account_15m (workspace_id, report_date)"
    )
    bind = op.get_bind()
    if bind.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").first():
        op.execute("SELECT create_hypertable('metrics_account_15m', by_range('bucket_start', INTERVAL '7 days'))")
        op.execute(f"SELECT add_retention_policy('metrics_account_15m', INTERVAL '{RETENTION}')")
    op.execute(f"""
INSERT INTO metrics_account_15m ({KEY}, spend, impressions, clicks, conversions, revenue, ad_rows)
SELECT {KEY}, sum(spend), sum(impressions)::bigint, sum(clicks)::bigint, sum(conversions), sum(revenue),
       count(*)
FROM metrics_15m
GROUP BY {KEY}""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS metrics_account_15m")
