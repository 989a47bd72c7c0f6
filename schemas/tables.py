"""SQLAlchemy Core definitions of the storage, for queries (serving, tests, analysts'
tools).  The DDL itself lives in the Alembic migrations, which also create the
TimescaleDB-specific parts; ``tests/schemas/test_migrations.py`` checks they agree."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.types import TypeEngine

metadata = MetaData()

MONEY = Numeric(24, 6)


def _identity(pk: bool) -> list[Column[object]]:
    return [
        Column("workspace_id", UUID(as_uuid=True), primary_key=pk, nullable=False),
        Column("provider", Text, primary_key=pk, nullable=False),
        Column("account_id", Text, primary_key=pk, nullable=False),
        Column("entity_level", Text, nullable=False),
        Column("entity_id", Text, primary_key=pk, nullable=False),
        Column("campaign_id", Text, nullable=False),
        Column("adset_id", Text, nullable=True),
        Column("report_date", Date, primary_key=pk, nullable=False),
    ]


def _measures() -> list[Column[object]]:
    return [
        Column("spend", MONEY, nullable=False),
        Column("impressions", BigInteger, nullable=False),
        Column("clicks", BigInteger, nullable=False),
        Column("conversions", MONEY, nullable=False),
        Column("revenue", MONEY, nullable=False),
    ]


TS = DateTime(timezone=True)

insight_snapshots = Table(
    "insight_snapshots",
    metadata,
    *_identity(pk=True),
    Column("timezone", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("captured_at", TS, primary_key=True, nullable=False),
    *_measures(),
    Column("source_partition", Integer),
    Column("source_offset", BigInteger),
    Column("produced_at", TS),
    Column("ingested_at", TS, nullable=False),
)

metric_deltas = Table(
    "metric_deltas",
    metadata,
    *_identity(pk=True),
    Column("currency", Text, nullable=False),
    Column("captured_at", TS, primary_key=True, nullable=False),
    Column("bucket_start", TS, nullable=False),
    *_measures(),
)

metrics_15m = Table(
    "metrics_15m",
    metadata,
    *_identity(pk=True),
    Column("currency", Text, nullable=False),
    Column("bucket_start", TS, primary_key=True, nullable=False),
    *_measures(),
    Column("last_captured_at", TS, nullable=False),
)

metrics_daily = Table(
    "metrics_daily",
    metadata,
    *_identity(pk=True),
    Column("timezone", Text, nullable=False),
    Column("currency", Text, nullable=False),
    *_measures(),
    Column("last_captured_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# A view (plain PostgreSQL) or a continuous aggregate (TimescaleDB): read-only here.
metrics_hourly = Table(
    "metrics_hourly",
    metadata,
    *_identity(pk=False),
    Column("currency", Text),
    Column("bucket_start", TS),
    *_measures(),
    info={"is_view": True},
)

# What analysts query per campaign-day and account-day (migration 0010): continuous
# aggregates over metrics_daily (TimescaleDB) or views (plain PostgreSQL); read-only.
analyst_campaign_daily = Table(
    "analyst_campaign_daily",
    metadata,
    Column("workspace_id", UUID(as_uuid=True)),
    Column("provider", Text),
    Column("account_id", Text),
    Column("campaign_id", Text),
    Column("report_date", Date),
    Column("currency", Text),
    Column("timezone", Text),
    *_measures(),
    info={"is_view": True},
)

analyst_account_daily = Table(
    "analyst_account_daily",
    metadata,
    Column("workspace_id", UUID(as_uuid=True)),
    Column("provider", Text),
    Column("account_id", Text),
    Column("report_date", Date),
    Column("currency", Text),
    Column("timezone", Text),
    *_measures(),
    info={"is_view": True},
)

pipeline_progress = Table(
    "pipeline_progress",
    metadata,
    Column("consumer", Text, primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("committed_at", TS, nullable=False),
)

_KEY_TYPES: dict[str, TypeEngine[Any]] = {"workspace_id": UUID(as_uuid=True), "report_date": Date(), "bucket_start": TS}


def _key(*names: str) -> list[Column[object]]:
    """A rollup's primary key columns, in key order (text unless said otherwise)."""
    return [Column(n, _KEY_TYPES.get(n, Text()), primary_key=True, nullable=False) for n in names]


# Sums of metrics_daily per campaign-day and currency (migration 0005), maintained by
# the pipeline's commit transaction: what the dashboard reads when it needs no ad grain.
metrics_campaign_daily = Table(
    "metrics_campaign_daily",
    metadata,
    *_key("workspace_id", "provider", "account_id", "campaign_id", "report_date", "currency"),
    Column("timezone", Text, nullable=False),
    *_measures(),
    Column("updated_at", TS, nullable=False),
)

# Sums of metrics_campaign_daily per account-day and currency (migration 0007), kept by
# the same commit transaction: what the dashboard reads when it needs no campaign grain.
metrics_account_daily = Table(
    "metrics_account_daily",
    metadata,
    *_key("workspace_id", "provider", "account_id", "report_date", "currency"),
    Column("timezone", Text, nullable=False),
    *_measures(),
    Column("updated_at", TS, nullable=False),
)

# Sums of metrics_15m per account-bucket and currency (migration 0008), kept by the same
# commit transaction by differences; ad_rows counts the ad rows beneath.
metrics_account_15m = Table(
    "metrics_account_15m",
    metadata,
    *_key("workspace_id", "provider", "account_id", "report_date", "currency", "bucket_start"),
    *_measures(),
    Column("ad_rows", Integer, nullable=False),
)
