"""The commit's statements read only the chunks of the days they write.

Inside a data-modifying statement TimescaleDB excludes chunks only on constants, so
each read of a hypertable in ``adapters.timescale.MOVE`` is bounded by the batch's
first and last day and bucket.  Without the bounds every staged row probed every chunk
(``metrics_15m`` keeps 400 days: 58 chunks), a cost that grows with the database's age
and that no benchmark on a young database shows; so this checks the plans themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from adapters.timescale import CREATE_STAGE, INSERT_STAGE, MOVE, InsightStore, batch_bounds
from domain.batch import build_batch
from domain.deltas import apply_snapshot
from schemas.envelope import Envelope
from schemas.insight import Snapshot
from schemas.metrics import Metrics
from tests.databases import fresh_database, pause_jobs

pytestmark = [pytest.mark.services, pytest.mark.timescale]

WS = "5f0d2a4e-2b7c-4f7e-9a51-0c3b8d1e6f20"
HYPERTABLES = ("metrics_15m", "metrics_daily", "metrics_account_15m")


def snap(ad: int, day: date, at: datetime, spend: int) -> Snapshot:
    return Snapshot(workspace_id=WS, provider="meta", account_id="act-1", entity_level="ad", entity_id=f"ad-{ad}",
                    campaign_id=f"cmp-{ad % 3}", adset_id=None, report_date=day, timezone="UTC", currency="USD",
                    captured_at=at, metrics=Metrics(Decimal(spend), 10 * spend, spend, Decimal(0), Decimal(spend)))


def batch(snaps: list[Snapshot]) -> Any:
    items: list[Any] = []
    for i, s in enumerate(snaps):
        _, out = apply_snapshot(None, s)
        items.append((out, Envelope(None, None, "t", 0, i, s.captured_at)))
    return build_batch(items)


@pytest.fixture(scope="module")
def aged(timescale_admin_url: str) -> Iterator[str]:
    """A database with 60 days of history: nine 7-day chunks in each hypertable."""
    with fresh_database(timescale_admin_url, "on") as url:
        pause_jobs(url)
        today = datetime.now(UTC).date()
        history = [snap(ad, d, datetime.combine(d, time(12), UTC), 10 + ad)
                   for d in (today - timedelta(days=n) for n in range(1, 61)) for ad in range(4)]
        store = InsightStore(url)
        try:
            store.write(batch(history))
        finally:
            store.close()
        yield url


def chunk_ranges(conn: psycopg.Connection[Any]) -> dict[str, tuple[str, Any, Any]]:
    rows = conn.execute(
        "SELECT chunk_name, hypertable_name, coalesce(range_start::date, range_start_integer::text::date), "
        "coalesce(range_end::date, range_end_integer::text::date) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = ANY(%s)", (list(HYPERTABLES),)).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def planned_chunks(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> set[str]:
    with psycopg.ClientCursor(conn) as cur:
        plan = "\n".join(r[0] for r in cur.execute("EXPLAIN " + statement, params).fetchall())
    return set(re.findall(r"_hyper_\d+_\d+_chunk", plan))


def test_each_statement_plans_only_the_chunks_of_the_batch(aged: str) -> None:
    now = datetime.now(UTC)
    today = now.date()
    # Today's polls of two ads and a restatement of a day 20 days back: the batch spans
    # three weeks, so a few chunks are legitimately read, the older ones never.
    b = batch([snap(0, today, now - timedelta(minutes=2), 50), snap(1, today, now - timedelta(minutes=2), 60),
               snap(2, today - timedelta(days=20), now - timedelta(minutes=2), 70)])
    with psycopg.connect(aged) as conn:
        chunks = chunk_ranges(conn)
        assert sum(1 for t, _, _ in chunks.values() if t == "metrics_15m") >= 9  # the history made them
        conn.execute(CREATE_STAGE)
        rows = InsightStore(aged)._ws(b.rows)
        conn.cursor().executemany(INSERT_STAGE, rows)
        bounds = batch_bounds(rows)
        first, last = bounds["first_day"], bounds["last_day"]
        seen: set[str] = set()
        for statement in MOVE.split(";\n"):
            planned = planned_chunks(conn, statement, bounds)
            outside = {c for c in planned if c in chunks and not (chunks[c][1] <= last and first < chunks[c][2])}
            assert not outside, f"{statement[:80]}... plans chunks outside {first}..{last}: " \
                                f"{sorted(chunks[c][:3] for c in outside)}"
            seen |= planned
        conn.rollback()
    assert seen  # the statements do read hypertables
