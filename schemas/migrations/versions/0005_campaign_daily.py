"""Campaign-day rollup: ``metrics_campaign_daily``, the sums of ``metrics_daily`` per
(workspace, provider, account, campaign, report date, currency).

Why: the dashboard's KPIs, spend mix, daily series and top campaigns never need ad
grain, but summing 30-60 days of ``metrics_daily`` for 20,000 ads is over a million rows
per request (seconds).  The same sums at campaign grain are ~20x fewer rows.

The pipeline maintains it in the commit transaction that writes ``metrics_daily``
(``adapters.timescale.CAMPAIGN_DAILY``): the touched campaign-days are *recomputed*
from ``metrics_daily``, never incremented by deltas, so replays stay idempotent and the
rollup always equals the analysts' ``sum(...) FROM metrics_daily``.

A plain table on both flavours (TimescaleDB and PostgreSQL): small, updated in place
(``fillfactor`` leaves room for HOT updates, like ``metrics_daily``).  Existing data is
backfilled here.

Branches from 0001 (label ``campaign_daily``); ``schemas.migrate.upgrade`` upgrades to
all heads.

Revision ID: 0005
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = ("campaign_daily",)
depends_on = None

KEY = "workspace_id, provider, account_id, campaign_id, report_date, currency"


def upgrade() -> None:
    op.execute(f"""
CREATE TABLE metrics_campaign_daily (
    workspace_id  uuid          NOT NULL,
    provider      text          NOT NULL,
    account_id    text          NOT NULL,
    campaign_id   text          NOT NULL,
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
    # The dashboard reads a workspace's date range; no measure is indexed, so the
    # pipeline's rewrites stay HOT.
    op.execute(
        "CREATE INDEX metrics_campaign_daily_ws_day ON metrics_campaign_daily (workspace_id, report_date)"
    )
    op.execute(f"""
INSERT INTO metrics_campaign_daily ({KEY}, timezone, spend, impressions, clicks, conversions, revenue)
SELECT {KEY}, min(timezone), sum(spend), sum(impressions)::bigint, sum(clicks)::bigint,
       sum(conversions), sum(revenue)
FROM metrics_daily
GROUP BY {KEY}""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS metrics_campaign_daily")
