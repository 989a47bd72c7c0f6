"""Rows for one transaction: one staging row per applied snapshot, progress for all."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from domain.batch import build_batch, live_messages
from domain.deltas import Applied, EntityState, apply_snapshot
from schemas.columns import STAGE_COLUMNS
from schemas.envelope import DeadLetter, Envelope
from tests.factories import metrics, snap

T = datetime(2026, 11, 2, 10, 1, tzinfo=UTC)
DAY = date(2026, 11, 2)


def env(offset: int, partition: int = 0) -> Envelope:
    return Envelope(b"k", b"v", "raw", partition, offset, None)


def test_rows_carry_cumulative_delta_and_bucket_and_progress_covers_everything() -> None:
    state: EntityState | None = None
    items: list = []  # type: ignore[type-arg]
    for i, spend in enumerate(["1", "3", "4"]):  # two in one bucket, one in the next
        state, out = apply_snapshot(state, snap(T + timedelta(minutes=7 * i), DAY, metrics(spend)))
        assert isinstance(out, Applied)
        items.append((out, env(10 + i)))
    state, dup = apply_snapshot(state, snap(T + timedelta(minutes=14), DAY, metrics("4")))
    items.append((dup, env(13)))
    items.append(DeadLetter(env(20, partition=1), "bad", "validate"))
    batch = build_batch(items)

    col = {c: i for i, c in enumerate(STAGE_COLUMNS)}
    assert all(len(r) == len(STAGE_COLUMNS) for r in batch.rows)
    assert [r[col["spend"]] for r in batch.rows] == [metrics(x).spend for x in ("1", "3", "4")]
    assert [r[col["delta_spend"]] for r in batch.rows] == [metrics(x).spend for x in ("1", "2", "1")]
    assert [r[col["bucket_spend"]] for r in batch.rows] == [metrics(x).spend for x in ("1", "3", "1")]
    assert [r[col["source_offset"]] for r in batch.rows] == [10, 11, 12]
    assert batch.progress == {("raw", 0): 14, ("raw", 1): 21}
    assert batch.ignored == {"duplicate": 1}
    assert [d.reason for d in batch.dead] == ["bad"]


def test_live_message_sums_changes_per_account_and_bucket() -> None:
    items = []
    for entity, spend in (("a", "2.50"), ("b", "1.25")):
        _, out = apply_snapshot(None, snap(T, DAY, metrics(spend, clicks=1, impressions=10), entity=entity))
        assert isinstance(out, Applied)
        items.append((out, env(1)))
    msgs = live_messages(build_batch(items), T)
    (msg,) = msgs.values()
    (change,) = msg["changes"]
    assert change["spend"] == "3.75" and change["clicks"] == 2
    assert change["bucket_start"] == "2026-11-02T10:00:00Z"
