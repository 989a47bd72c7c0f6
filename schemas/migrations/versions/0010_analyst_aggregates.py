"""What analysts query per campaign and per account: ``analyst_campaign_daily`` and
``analyst_account_daily``, the sums of ``metrics_daily`` per (workspace, provider,
account[, campaign], report date, currency), in each account's own day (``report_date``
is the account-local date) and currency.

TimescaleDB: continuous aggregates.  ``metrics_daily`` becomes a hypertable on
``report_date`` (7-day chunks; the data is moved in place), the campaign-day aggregate
is built on it and the account-day one on the campaign-day one (hierarchical: its
refresh reads campaign rows, about 20x fewer than ad rows).  Both are real-time
(``materialized_only = false``): days after the last refresh are computed from
``metrics_daily`` on read, so today and yesterday are always exact; a restatement of an
already materialised day shows after the refresh policies' next runs (every 5 minutes
each, so at most 10 minutes for the account level).  The policies' window starts 37 days
back: a restatement reaches 35 days before the account's local today, which is at most
one day ahead of UTC.  ``metrics_daily`` keeps no retention, so nothing the window covers
is ever dropped underneath it.

Plain PostgreSQL: views with the same names and columns over ``metrics_daily``
(computed on read, always exact).

The per-entity grains are ``metrics_daily`` itself (the day) and ``metrics_hourly``
(0001, the hour).  The dashboard keeps reading the tables its commit keeps exact
(``metrics_campaign_daily``, ``metrics_account_daily``, ``metrics_account_15m``).

Downgrade drops the aggregates (or views); ``metrics_daily`` stays a hypertable (same
columns, keys and behaviour).  Branches from 0001 (label ``analyst_aggregates``).

Revision ID: 0010
Revises: 0001
"""

from __future__ import annotations

from alembic import op

from schemas.flavor import timescale_installed

revision = "0010"
down_revision = "0001"
branch_labels = ("analyst_aggregates",)
depends_on = None

CAMPAIGN = "analyst_campaign_daily"
ACCOUNT = "analyst_account_daily"
REFRESH_START = "37 days"  # restatement window (35) + the local day ahead of UTC + 1
SUMS = (
    "min(timezone) AS timezone, sum(spend) AS spend, sum(impressions)::bigint AS impressions, "
    "sum(clicks)::bigint AS clicks, sum(conversions) AS conversions, sum(revenue) AS revenue"
)
DAY = "time_bucket(INTERVAL '1 day', report_date)"


def _select(source: str, key: str, day: str) -> str:
    return (
        f"SELECT {key}, {day} AS report_date, currency, {SUMS} FROM {source} "
        f"GROUP BY {key}, {day}, currency"
    )


CAMPAIGN_KEY = "workspace_id, provider, account_id, campaign_id"
ACCOUNT_KEY = "workspace_id, provider, account_id"


def upgrade() -> None:
    if not timescale_installed(op.get_bind()):
        op.execute(f"CREATE VIEW {CAMPAIGN} AS " + _select("metrics_daily", CAMPAIGN_KEY, "report_date"))
        op.execute(f"CREATE VIEW {ACCOUNT} AS " + _select("metrics_daily", ACCOUNT_KEY, "report_date"))
        return

    # No default index on report_date: the key and metrics_daily_ws_day lead every read
    # the pipeline makes, and on a chunk without statistics yet the planner took that
    # index for the commit's per-campaign probes, filtering a whole day per probe (a
    # 2,000-row commit spent 200 ms there instead of 4).  The aggregates' refreshes read
    # a few days of a 7-day chunk.  if_not_exists: a downgrade leaves the hypertable.
    op.execute(
        "SELECT create_hypertable('metrics_daily', by_range('report_date', INTERVAL '7 days'), "
        "create_default_indexes => false, migrate_data => true, if_not_exists => true)"
    )
    # Continuous aggregates cannot be created, nor refreshed, inside a transaction block.
    with op.get_context().autocommit_block():
        for view, source, key in (
            (CAMPAIGN, "metrics_daily", CAMPAIGN_KEY),
            (ACCOUNT, CAMPAIGN, ACCOUNT_KEY),
        ):
            op.execute(
                f"CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous, "
                "timescaledb.materialized_only = false) AS " + _select(source, key, DAY) + " WITH NO DATA"
            )
            # existing days (an upgraded database), the lower level first
            op.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
    for view in (CAMPAIGN, ACCOUNT):
        op.execute(
            f"SELECT add_continuous_aggregate_policy('{view}', start_offset => INTERVAL '{REFRESH_START}', "
            "end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '5 minutes')"
        )


def downgrade() -> None:
    if not timescale_installed(op.get_bind()):
        op.execute(f"DROP VIEW IF EXISTS {ACCOUNT}")
        op.execute(f"DROP VIEW IF EXISTS {CAMPAIGN}")
        return
    with op.get_context().autocommit_block():
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {ACCOUNT}")
        op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {CAMPAIGN}")
