"""The README's analyst queries run as written and agree with the simulator's oracle."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg

from connectors.sim.generator import expected_totals, poll_stream
from connectors.sim.world import build_world
from connectors.timescale import InsightStore
from metricx.settings import REPO_ROOT
from pipelines.batch import build_batch
from pipelines.deltas import EntityState, Refused, apply_snapshot
from schemas.envelope import Envelope


def readme_queries() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## For analysts", 1)[1]
    sql = re.search(r"```sql\n(.*?)```", section, re.S)
    assert sql, "no SQL block in the README's analysts section"
    parts = re.split(r"^-- \d+\..*$", sql.group(1), flags=re.M)
    return [p.strip() for p in parts if p.strip()]


def test_readme_queries_run_and_match_the_oracle(database: str) -> None:
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    snaps = list(poll_stream(build_world(5), end - timedelta(hours=30), 121, seed=5))
    states: dict[str, EntityState | None] = defaultdict(lambda: None)
    items = []
    for i, s in enumerate(snaps):
        states[s.entity_key], out = apply_snapshot(states[s.entity_key], s)
        assert not isinstance(out, Refused)
        items.append((out, Envelope(None, None, "t", 0, i, None)))
    store = InsightStore(database)
    store.write(build_batch(items))
    store.close()

    queries = readme_queries()
    assert len(queries) == 5
    ws = snaps[0].workspace_id
    one = next(s for s in snaps if s.workspace_id == ws)
    today = datetime.now(ZoneInfo(one.timezone)).date()
    params = {"ws": ws, "account": one.account_id, "day": today, "campaign": one.campaign_id}
    with psycopg.connect(database) as conn:
        results = [conn.execute(re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", q), params).fetchall() for q in queries]
    for i, rows in enumerate(results[:4], start=1):
        assert rows, f"query {i} returned nothing"

    # Query 1, today's spend per account, equals the oracle's latest snapshots summed.
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for (w, provider, account, _entity, day), m in expected_totals(snaps).items():
        tz = next(s.timezone for s in snaps if s.account_id == account)
        if w == ws and day == datetime.now(ZoneInfo(tz)).date():
            expected[(provider, account)] += m.spend
    got = {(r[0], r[1]): r[3] for r in results[0]}
    assert got == dict(expected)
    # ROAS is a ratio of sums, NULL when nothing was spent.
    for r in results[0]:
        assert r[5] is None if r[3] == 0 else abs(r[5] - r[4] / r[3]) < Decimal("1e-12")
