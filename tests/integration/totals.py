"""Read totals back from the database, per series, for comparison with an oracle."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from confluent_kafka import Consumer, Message

from schemas.metrics import Metrics

SeriesKey = tuple[str, str, str, str, date]
SUMS = "sum(spend), sum(impressions)::bigint, sum(clicks)::bigint, sum(conversions), sum(revenue)"
KEY = "workspace_id::text, provider, account_id, entity_id, report_date"


def _m(row: tuple[Any, ...]) -> Metrics:
    s, i, c, cv, r = row
    return Metrics(Decimal(s).normalize(), int(i), int(c), Decimal(cv).normalize(), Decimal(r).normalize())


def norm(m: Metrics) -> Metrics:
    """Compare money by value, not by scale (12.5 == 12.500000)."""
    return Metrics(m.spend.normalize(), m.impressions, m.clicks, m.conversions.normalize(), m.revenue.normalize())


def per_series(url: str, table: str, where: str = "") -> dict[SeriesKey, Metrics]:
    q = f"SELECT {KEY}, {SUMS} FROM {table} {where} GROUP BY {KEY}"
    with psycopg.connect(url) as conn:
        return {tuple(r[:5]): _m(r[5:]) for r in conn.execute(q).fetchall()}


def latest_snapshots(url: str) -> dict[SeriesKey, Metrics]:
    q = (f"SELECT DISTINCT ON ({KEY}) {KEY}, spend, impressions, clicks, conversions, revenue "
         f"FROM insight_snapshots ORDER BY {KEY}, captured_at DESC")
    with psycopg.connect(url) as conn:
        return {tuple(r[:5]): _m(r[5:]) for r in conn.execute(q).fetchall()}


def normalise(d: dict[SeriesKey, Metrics]) -> dict[SeriesKey, Metrics]:
    return {k: norm(v) for k, v in d.items()}


def wait_until(check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive:
            alive()
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def progress(url: str, topic: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM pipeline_progress WHERE topic = %s", (topic,)
        ).fetchone()
    return int(row[0]) if row else 0


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[Message]:
    """Every message on ``topic`` (at least ``expected``, plus any that arrive 2 s later)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    out: list[Message] = []
    deadline = datetime.now() + timedelta(seconds=timeout)
    while len(out) < expected and datetime.now() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append(m)
    # Anything beyond what we expect would be a bug too: read a little longer.
    extra_deadline = datetime.now() + timedelta(seconds=2)
    while datetime.now() < extra_deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            out.append(m)
    c.close()
    return out


def header(m: Message, name: str) -> bytes:
    """The value of header ``name`` on a consumed message (KeyError if it has none)."""
    raw = m.headers() or []
    value = dict(raw.items() if isinstance(raw, dict) else raw)[name]
    assert isinstance(value, bytes), f"header {name!r} is not bytes: {value!r}"
    return value
