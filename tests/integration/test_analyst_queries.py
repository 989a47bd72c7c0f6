"""The README's analyst queries run as written, on both storage flavours, and agree with
the simulator's oracle; on TimescaleDB both before the continuous aggregates are
refreshed (real-time aggregation) and after (materialised)."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from adapters.timescale import InsightStore
from domain.batch import build_batch
from domain.deltas import EntityState, Refused, apply_snapshot
from domain.sim.generator import expected_totals, poll_stream
from domain.sim.world import build_world
from ground.settings import REPO_ROOT
from schemas.envelope import Envelope
from schemas.insight import Snapshot
from tests.databases import flavour_of, refresh_aggregates

pytestmark = pytest.mark.services


def readme_queries() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## For analysts", 1)[1]
    sql = re.search(r"```sql\n(.*?)```", section, re.S)
    assert sql, "no SQL block in the README's analysts section"
    parts = re.split(r"^-- \d+\..*$", sql.group(1), flags=re.M)
    return [p.strip() for p in parts if p.strip()]


def run_queries(url: str, params: dict[str, Any]) -> list[list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return [conn.execute(re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", q), params).fetchall()
                for q in readme_queries()]


def write(url: str, snaps: list[Snapshot]) -> None:
    states: dict[str, EntityState | None] = defaultdict(lambda: None)
    items = []
    for i, s in enumerate(snaps):
        states[s.entity_key], out = apply_snapshot(states[s.entity_key], s)
        assert not isinstance(out, Refused)
        items.append((out, Envelope(None, None, "t", 0, i, None)))
    store = InsightStore(url)
    store.write(build_batch(items))
    store.close()


def oracle(snaps: list[Snapshot], ws: str) -> dict[tuple[str, str, date], tuple[Decimal, Decimal, Decimal]]:
    """(provider, account, report date) -> (spend, revenue, conversions) of the platform's
    last word per ad, summed here without any metricx code."""
    out: dict[tuple[str, str, date], tuple[Decimal, Decimal, Decimal]] = defaultdict(
        lambda: (Decimal(0), Decimal(0), Decimal(0)))
    for (w, provider, account, _entity, day), m in expected_totals(snaps).items():
        if w == ws:
            s, r, c = out[(provider, account, day)]
            out[(provider, account, day)] = (s + m.spend, r + m.revenue, c + m.conversions)
    return out


def check(results: list[list[tuple[Any, ...]]], snaps: list[Snapshot], ws: str) -> None:
    assert len(results) == 6
    for i, rows in enumerate(results[:4], start=1):
        assert rows, f"query {i} returned nothing"
    expected = oracle(snaps, ws)
    tz = {s.account_id: s.timezone for s in snaps}

    # 1. today's spend and revenue per account (each account's own today)
    today = {(p, a): (s, r) for (p, a, d), (s, r, _c) in expected.items() if d == datetime.now(ZoneInfo(tz[a])).date()}
    assert {(r[0], r[1]): (r[3], r[4]) for r in results[0]} == today
    for r in results[0]:  # ROAS is a ratio of sums, NULL when nothing was spent
        assert r[5] is None if r[3] == 0 else abs(r[5] - r[4] / r[3]) < Decimal("1e-12")

    # 2. the campaigns' spend over the last 7 report dates adds up to the accounts'
    week_start = datetime.now(UTC).date() - timedelta(days=7)
    assert sum(r[2] for r in results[1]) == sum(s for (_p, _a, d), (s, _r, _c) in expected.items() if d > week_start)

    # 6. per account and report date
    month_start = datetime.now(UTC).date() - timedelta(days=30)
    assert {(r[0], r[1], r[2]): (r[4], r[5]) for r in results[5]} == {
        (d, p, a): (s, r) for (p, a, d), (s, r, _c) in expected.items() if d > month_start}


@pytest.mark.parametrize("database", ["timescaledb", "postgresql"], indirect=True)
def test_readme_queries_run_and_match_the_oracle(database: str) -> None:
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    snaps = list(poll_stream(build_world(5), end - timedelta(hours=30), 121, seed=5))
    write(database, snaps)

    ws = snaps[0].workspace_id
    one = next(s for s in snaps if s.workspace_id == ws)
    params = {"ws": ws, "account": one.account_id, "day": datetime.now(ZoneInfo(one.timezone)).date(),
              "campaign": one.campaign_id}
    check(run_queries(database, params), snaps, ws)
    if flavour_of(database) == "timescaledb":
        refresh_aggregates(database)  # now read from the materialisations
        check(run_queries(database, params), snaps, ws)
