"""Applied outcomes -> the rows one database transaction writes, and the live update.

Pure: the writer only transports these rows.  One row per applied snapshot
(``schemas.columns.STAGE_COLUMNS``): cumulative values, delta and the bucket's absolute
value together.  Rollup tables are derived from it in SQL, newest row per key; their
rows carry absolute values (never increments), so replaying a batch rewrites the same
numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.deltas import Applied, Ignored
from schemas.alerts import Alert
from schemas.batch import Batch, LiveKey
from schemas.envelope import DeadLetter, Envelope


def build_batch(items: Iterable[tuple[Applied | Ignored, Envelope] | DeadLetter | Alert]) -> Batch:
    """Dead letters travel in the same batch so that the recorded Kafka progress covers
    every message, written or refused (the dead letters are sent before the commit)."""
    batch = Batch()
    rows = batch.rows
    progress = batch.progress
    live = batch.live
    for item in items:
        if isinstance(item, Alert):
            batch.alerts.append(item)  # no Kafka position of its own: its snapshot has one
            continue
        if isinstance(item, DeadLetter):
            batch.dead.append(item)
            env = item.envelope
        else:
            outcome, env = item
        pos = (env.topic, env.partition)
        if env.offset >= progress.get(pos, 0):
            progress[pos] = env.offset + 1
        if isinstance(item, DeadLetter):
            continue
        if isinstance(outcome, Ignored):
            batch.ignored[outcome.reason] += 1
            continue
        s = outcome.snapshot
        m, d, b = s.metrics, outcome.delta, outcome.bucket_value
        rows.append(
            (
                s.workspace_id, s.provider, s.account_id, s.entity_level, s.entity_id,
                s.campaign_id, s.adset_id, s.report_date, s.timezone, s.currency, s.captured_at,
                m.spend, m.impressions, m.clicks, m.conversions, m.revenue,
                d.spend, d.impressions, d.clicks, d.conversions, d.revenue,
                outcome.bucket_start,
                b.spend, b.impressions, b.clicks, b.conversions, b.revenue,
                env.partition, env.offset, env.produced_at,
            )
        )
        per_ws = live.get(s.workspace_id)
        if per_ws is None:
            per_ws = live[s.workspace_id] = {}
        lk: LiveKey = (s.provider, s.account_id, s.currency, s.report_date, outcome.bucket_start)
        prev = per_ws.get(lk)
        per_ws[lk] = d if prev is None else prev + d
    return batch


def _num(x: Decimal | int) -> str | int:
    return x if isinstance(x, int) else str(x)


def live_messages(batch: Batch, committed_at: datetime) -> dict[str, dict[str, Any]]:
    """One compact ``metricx.live.v1`` message per workspace touched by the batch.

    It carries the *changes* (sums of deltas) per provider, account, report date and
    15-minute bucket, in the account's currency, so a dashboard can patch its totals
    without a query; money is a decimal string as everywhere else.
    """
    out: dict[str, dict[str, Any]] = {}
    stamp = committed_at.isoformat().replace("+00:00", "Z")
    for ws, changes in batch.live.items():
        rows = [
            {
                "provider": provider,
                "account_id": account,
                "currency": currency,
                "report_date": day.isoformat(),
                "bucket_start": bucket.isoformat().replace("+00:00", "Z"),
                "spend": _num(m.spend),
                "impressions": m.impressions,
                "clicks": m.clicks,
                "conversions": _num(m.conversions),
                "revenue": _num(m.revenue),
            }
            for (provider, account, currency, day, bucket), m in changes.items()
        ]
        out[ws] = {"schema": "metricx.live.v1", "workspace_id": ws, "committed_at": stamp, "changes": rows}
    return out
