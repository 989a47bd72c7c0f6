"""Rows for one transaction: upserted tables get the newest row per key only."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from pipelines.batch import build_batch, live_messages
from pipelines.deltas import Applied, EntityState, apply_snapshot
from schemas.columns import BUCKET_COLUMNS, DAILY_COLUMNS, DELTA_COLUMNS, SNAPSHOT_COLUMNS
from schemas.envelope import DeadLetter, Envelope
from tests.factories import metrics, snap

T = datetime(2026, 11, 2, 10, 1, tzinfo=timezone.utc)
DAY = date(2026, 11, 2)


def env(offset: int, partition: int = 0) -> Envelope:
    return Envelope(b"k", b"v", "raw", partition, offset, None)


def test_rollup_rows_keep_the_newest_value_per_key_and_progress_covers_everything() -> None:
    state: EntityState | None = None
    items = []
    for i, spend in enumerate(["1", "3", "4"]):  # two in one bucket, one in the next
        state, out = apply_snapshot(state, snap(T + timedelta(minutes=7 * i), DAY, metrics(spend)))
        assert isinstance(out, Applied)
        items.append((out, env(10 + i)))
    items.append(DeadLetter(env(20, partition=1), "bad", "validate"))
    batch = build_batch(items)

    assert len(batch.snapshots) == len(batch.deltas) == 3
    assert len(batch.snapshots[0]) == len(SNAPSHOT_COLUMNS)
    assert len(batch.deltas[0]) == len(DELTA_COLUMNS)
    spend_b = BUCKET_COLUMNS.index("spend")
    buckets = sorted(batch.buckets.values(), key=lambda r: r[BUCKET_COLUMNS.index("bucket_start")])
    assert [r[spend_b] for r in buckets] == [metrics("3").spend, metrics("1").spend]
    (daily,) = batch.daily.values()
    assert daily[DAILY_COLUMNS.index("spend")] == metrics("4").spend
    assert batch.progress == {("raw", 0): 13, ("raw", 1): 21}
    assert [d.reason for d in batch.dead] == ["bad"]


def test_live_message_sums_changes_per_account_and_bucket() -> None:
    state: EntityState | None = None
    items = []
    for entity, spend in (("a", "2.50"), ("b", "1.25")):
        state = None
        state, out = apply_snapshot(state, snap(T, DAY, metrics(spend, clicks=1, impressions=10), entity=entity))
        items.append((out, env(1)))
    msgs = live_messages(build_batch(items), T)
    (msg,) = msgs.values()
    (change,) = msg["changes"]
    assert change["spend"] == "3.75" and change["clicks"] == 2
    assert change["bucket_start"] == "2026-11-02T10:00:00Z"
