"""Column order of every table the pipeline writes, shared by the pure row builder and
the database writer (checked against the migrations by ``tests/schemas/test_migrations.py``).
No I/O here."""

from __future__ import annotations

from schemas.measures import MEASURES

IDENTITY = (
    "workspace_id",
    "provider",
    "account_id",
    "entity_level",
    "entity_id",
    "campaign_id",
    "adset_id",
    "report_date",
)

SNAPSHOT_COLUMNS = (
    *IDENTITY,
    "timezone",
    "currency",
    "captured_at",
    *MEASURES,
    "source_partition",
    "source_offset",
    "produced_at",
)
DELTA_COLUMNS = (*IDENTITY, "currency", "captured_at", "bucket_start", *MEASURES)
BUCKET_COLUMNS = (*IDENTITY, "currency", "bucket_start", *MEASURES, "last_captured_at")
DAILY_COLUMNS = (*IDENTITY, "timezone", "currency", *MEASURES, "last_captured_at")
PROGRESS_COLUMNS = ("consumer", "topic", "partition", "next_offset")

# One staging row per applied snapshot carries everything the four tables need: the
# cumulative values, the delta, and the absolute value of its 15-minute bucket.  The
# database derives the rollup rows from it (newest per key), so each snapshot is
# encoded and sent once.
DELTA_MEASURES = tuple(f"delta_{m}" for m in MEASURES)
BUCKET_MEASURES = tuple(f"bucket_{m}" for m in MEASURES)
STAGE_COLUMNS = (
    *IDENTITY,
    "timezone",
    "currency",
    "captured_at",
    *MEASURES,
    *DELTA_MEASURES,
    "bucket_start",
    *BUCKET_MEASURES,
    "source_partition",
    "source_offset",
    "produced_at",
)

SERIES_KEY = ("workspace_id", "provider", "account_id", "entity_id", "report_date")
SNAPSHOT_KEY = (*SERIES_KEY, "captured_at")
BUCKET_KEY = (*SERIES_KEY, "bucket_start")
PROGRESS_KEY = ("consumer", "topic", "partition")
