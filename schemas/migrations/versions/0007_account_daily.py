"""Account-day rollup: ``metrics_account_daily``, the sums of ``metrics_campaign_daily``
(hence of ``metrics_daily``) per (workspace, provider, account, report date, currency).

Why: the dashboard's KPIs (both periods), currencies, spend mix and daily series by
provider need neither ad nor campaign grain, yet summing 30-60 days of
``metrics_campaign_daily`` for 1,000 campaigns is 30-60k rows per request, most of a
cold request's time.  An account has tens to hundreds of campaigns, so the same sums
at account grain are one to two orders of magnitude fewer rows.

The pipeline maintains it in the commit transaction, right after the campaign-day rows
(``adapters.timescale.ACCOUNT_DAILY``), the same way: the touched account-days are
locked in key order, then *recomputed* from ``metrics_campaign_daily`` by a later
statement (never incremented), so replays are idempotent and the rollup always equals
the analysts' ``sum(...) FROM metrics_daily``.

That recompute probes ``metrics_campaign_daily`` by (workspace, report date, provider,
account); its 0005 index (workspace, report date) is replaced by one with those two
columns appended (same prefix for the dashboard's range reads, no extra index to keep
up, key columns only so the rewrites stay HOT).

A plain table on both flavours (TimescaleDB and PostgreSQL).  Existing data is
backfilled here.  On the ``campaign_daily`` branch (after 0005).

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

KEY = "workspace_id, provider, account_id, report_date, currency"


def upgrade() -> None:
    op.execute(f"""
CREATE TABLE metrics_account_daily (
    workspace_id  uuid          NOT NULL,
    provider      text          NOT NULL,
    account_id    text          NOT NULL,
    report_date   date          NOT NULL,
    currency      text          NOT NULL,
    timezone      text          NOT NULL,
    spend         numeric(24,6) NOT NULL DEFAULT 0,
    impressions   bigint        NOT NULL DEFAULT 0,
    clicks        bigint        NOT NULL DEFAULT 0,
    conversions   numeric(24,6) NOT NULL DEFAULT 0,
    revenue       numeric(24,6) NOT NULL DEFAULT 0,
    updated_at    timestamptz   NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY ({KEY})
) WITH (fillfactor = 50)""")
    op.execute(
        "CREATE INDEX metrics_account_daily_ws_day ON metrics_account_daily (workspace_id, report_date)"
    )
    op.execute(
        "CREATE INDEX metrics_campaign_daily_ws_day_account ON metrics_campaign_daily "
        "(workspace_id, report_date, provider, account_id)"
    )
    op.execute("DROP INDEX IF EXISTS metrics_campaign_daily_ws_day")
    op.execute(f"""
INSERT INTO metrics_account_daily ({KEY}, timezone, spend, impressions, clicks, conversions, revenue)
SELECT {KEY}, min(timezone), sum(spend), sum(impressions)::bigint, sum(clicks)::bigint,
       sum(conversions), sum(revenue)
FROM metrics_campaign_daily
GROUP BY {KEY}""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS metrics_account_daily")
    op.execute(
        "CREATE INDEX IF NOT EXISTS metrics_campaign_daily_ws_day ON metrics_campaign_daily (workspace_id, report_date)"
    )
    op.execute("DROP INDEX IF EXISTS metrics_campaign_daily_ws_day_account")
