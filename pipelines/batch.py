"""Applied outcomes -> the rows one database transaction writes, and the live update.

Pure: the writer only transports these rows.  Upserted tables (``metrics_15m``,
``metrics_daily``) get one row per key per batch, the latest by ``captured_at``, because
a single ``INSERT ... ON CONFLICT DO UPDATE`` may not touch a row twice; rows carry
absolute values (never increments), so replaying a batch rewrites the same numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pipelines.deltas import Applied, Ignored
from schemas.envelope import DeadLetter, Envelope
from schemas.metrics import NO_METRICS, Metrics

Row = tuple[Any, ...]
SeriesKey = tuple[str, str, str, str, date]
LiveKey = tuple[str, str, str, date, datetime]  # provider, account, currency, day, bucket


@dataclass
class Batch:
    snapshots: list[Row] = field(default_factory=list)
    deltas: list[Row] = field(default_factory=list)
    buckets: dict[tuple[SeriesKey, datetime], Row] = field(default_factory=dict)
    daily: dict[SeriesKey, Row] = field(default_factory=dict)
    progress: dict[tuple[str, int], int] = field(default_factory=dict)
    live: dict[str, dict[LiveKey, Metrics]] = field(default_factory=dict)
    ignored: Counter[str] = field(default_factory=Counter)
    dead: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.snapshots) + sum(self.ignored.values())


def build_batch(items: Iterable[tuple[Applied | Ignored, Envelope] | DeadLetter]) -> Batch:
    """Dead letters travel in the same batch so that the recorded Kafka progress covers
    every message, written or refused (the dead letters are sent before the commit)."""
    batch = Batch()
    for item in items:
        if isinstance(item, DeadLetter):
            batch.dead.append(item)
            env = item.envelope
            pos = (env.topic, env.partition)
            if env.offset + 1 > batch.progress.get(pos, -1):
                batch.progress[pos] = env.offset + 1
            continue
        outcome, env = item
        pos = (env.topic, env.partition)
        if env.offset + 1 > batch.progress.get(pos, -1):
            batch.progress[pos] = env.offset + 1
        if isinstance(outcome, Ignored):
            batch.ignored[outcome.reason] += 1
            continue
        s = outcome.snapshot
        ident = (
            s.workspace_id,
            s.provider,
            s.account_id,
            s.entity_level,
            s.entity_id,
            s.campaign_id,
            s.adset_id,
            s.report_date,
        )
        m, d, b = s.metrics, outcome.delta, outcome.bucket_value
        batch.snapshots.append(
            (*ident, s.timezone, s.currency, s.captured_at, *m.as_tuple(),
             env.partition, env.offset, env.produced_at)
        )
        batch.deltas.append((*ident, s.currency, s.captured_at, outcome.bucket_start, *d.as_tuple()))
        series: SeriesKey = (s.workspace_id, s.provider, s.account_id, s.entity_id, s.report_date)
        # Within one entity the stateful step emits in captured_at order, so the last
        # row seen per key is the newest.
        batch.buckets[(series, outcome.bucket_start)] = (
            *ident, s.currency, outcome.bucket_start, *b.as_tuple(), s.captured_at
        )
        batch.daily[series] = (*ident, s.timezone, s.currency, *m.as_tuple(), s.captured_at)
        per_ws = batch.live.setdefault(s.workspace_id, {})
        lk: LiveKey = (s.provider, s.account_id, s.currency, s.report_date, outcome.bucket_start)
        per_ws[lk] = per_ws.get(lk, NO_METRICS) + d
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
    for ws, changes in batch.live.items():
        rows = []
        for (provider, account, currency, day, bucket), m in changes.items():
            rows.append(
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
            )
        out[ws] = {
            "schema": "metricx.live.v1",
            "workspace_id": ws,
            "committed_at": committed_at.isoformat().replace("+00:00", "Z"),
            "changes": rows,
        }
    return out
