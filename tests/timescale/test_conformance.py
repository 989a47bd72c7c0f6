"""The project's storage on TimescaleDB 2.28 (the services' server, extension
preloaded): the Alembic migrations' TimescaleDB flavour, its catalogue (hypertables,
continuous aggregates, policies), and data written through the pipeline's own path
(``apply_snapshot`` -> ``build_batch`` -> ``InsightStore``) agreeing across every table
and aggregate and with an oracle computed here from the generated snapshots, through
refreshes, real-time aggregation, a restatement into materialised buckets, compression,
a replay into compressed chunks, retention and the downgrade.

The tests of this module share one migrated database (module fixture ``world``), whose
policies are taken off the background scheduler: each test runs the real policy jobs
itself (``CALL run_job``) when it means to.  Every test re-checks the invariants against
the oracle, which follows every write, so they hold whichever subset of the tests runs.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from alembic.script import ScriptDirectory

from adapters.timescale import InsightStore
from domain.batch import build_batch
from domain.deltas import RESTATEMENT_WINDOW_DAYS, EntityState, Ignored, Refused, apply_snapshot
from schemas.envelope import DeadLetter, Envelope
from schemas.insight import RAW_TOPIC, Snapshot
from schemas.metrics import Metrics
from schemas.migrate import alembic_config, downgrade
from tests.databases import flavour_of, fresh_database, pause_jobs, refresh_aggregates

pytestmark = [pytest.mark.services, pytest.mark.timescale]

NY = "America/New_York"
KTM = "Asia/Kathmandu"  # UTC+05:45: local days and hours do not line up with UTC hours
WS_A = "0b7e1f7a-6a53-4f43-9d7e-3c1d6d0c0a01"
WS_B = "9a2c4e6b-1d3f-4a5b-8c7d-e9f0a1b2c3d4"
CONSUMER = "conformance"
PARTITIONS = 3
META_RESTATEMENT_DAYS = 28  # the longest restatement a platform sends (Meta)
RAW_TABLES = ("insight_snapshots", "metric_deltas")
HYPERTABLES = ("insight_snapshots", "metric_deltas", "metrics_15m")  # compressed ones
# The continuous aggregates, each after the one it is built on.
CAGGS = ("metrics_hourly", "analyst_campaign_daily", "analyst_account_daily")
METRICX_RELATIONS = (
    "insight_snapshots",
    "metric_deltas",
    "metrics_15m",
    "metrics_hourly",
    "analyst_campaign_daily",
    "analyst_account_daily",
    "metrics_daily",
    "metrics_campaign_daily",
    "metrics_account_daily",
    "metrics_account_15m",
    "pipeline_progress",
)

SeriesKey = tuple[str, str, str, str, date]  # workspace, provider, account, entity, report_date
# spend, impressions, clicks, conversions, revenue
Vals = tuple[Decimal, int, int, Decimal, Decimal]
ZERO: Vals = (Decimal(0), 0, 0, Decimal(0), Decimal(0))
KEY_SQL = "workspace_id::text, provider, account_id, entity_id, report_date"
SUMS_SQL = (
    "sum(spend), sum(impressions)::bigint, sum(clicks)::bigint, sum(conversions), sum(revenue)"
)
VALS_SQL = "spend, impressions, clicks, conversions, revenue"


# ---------------------------------------------------------------------------- oracle


def _add(a: Vals, b: Vals) -> Vals:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


def _sub(a: Vals, b: Vals) -> Vals:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4])


def _vals(row: Iterable[Any]) -> Vals:
    s, i, c, cv, r = row
    return (Decimal(s), int(i), int(c), Decimal(cv), Decimal(r))


def _series(s: Snapshot) -> SeriesKey:
    return (s.workspace_id, s.provider, s.account_id, s.entity_id, s.report_date)


def _floor(ts: datetime, minutes: int) -> datetime:
    ts = ts.astimezone(UTC)
    return ts.replace(minute=ts.minute - ts.minute % minutes, second=0, microsecond=0)


class Oracle:
    """What the tables must hold, from the snapshots in arrival order, by the documented
    rules only: a snapshot newer than the series' latest one moves it (its change is
    booked in the 15-minute UTC bucket it was captured in, or in the last bucket of its
    report date when captured after that local day ended); anything else changes nothing.
    """

    def __init__(self) -> None:
        self.latest: dict[SeriesKey, tuple[datetime, Vals]] = {}
        self.buckets: dict[tuple[SeriesKey, datetime], Vals] = {}
        self.applied = 0

    def see(self, s: Snapshot) -> None:
        key = _series(s)
        m = s.metrics
        new: Vals = (m.spend, m.impressions, m.clicks, m.conversions, m.revenue)
        prev = self.latest.get(key)
        if prev is not None and s.captured_at <= prev[0]:
            return
        self.applied += 1
        self.latest[key] = (s.captured_at, new)
        day_end = datetime.combine(s.report_date + timedelta(days=1), time(0), ZoneInfo(s.timezone))
        bucket = (
            day_end.astimezone(UTC) - timedelta(minutes=15)
            if s.captured_at >= day_end
            else _floor(s.captured_at, 15)
        )
        change = _sub(new, prev[1] if prev else ZERO)
        self.buckets[(key, bucket)] = _add(self.buckets.get((key, bucket), ZERO), change)

    def daily(self) -> dict[SeriesKey, Vals]:
        return {k: v for k, (_, v) in self.latest.items()}

    def hourly(self) -> dict[tuple[SeriesKey, datetime], Vals]:
        out: dict[tuple[SeriesKey, datetime], Vals] = {}
        for (key, bucket), v in self.buckets.items():
            hk = (key, _floor(bucket, 60))
            out[hk] = _add(out.get(hk, ZERO), v)
        return out


# ---------------------------------------------------------------------------- pipeline

Item = Any  # (Applied | Ignored, Envelope) | DeadLetter


@dataclass
class World:
    """The migrated database, the pipeline's per-entity state, and the oracle."""

    dsn: str
    url: str
    flavour: str
    now: datetime
    oracle: Oracle = field(default_factory=Oracle)
    states: dict[str, EntityState] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    batches: list[list[Item]] = field(default_factory=list)
    raw_gone: set[SeriesKey] = field(default_factory=set)  # dropped from raw tables by retention
    raw_gone_rows: int = 0
    downgraded: bool = False

    def fold(self, snaps: Iterable[Snapshot]) -> list[Item]:
        items: list[Item] = []
        for s in snaps:
            part = zlib.crc32(s.entity_key.encode()) % PARTITIONS
            offset = self.offsets.get(part, 0)
            self.offsets[part] = offset + 1
            env = Envelope(
                s.entity_key.encode(),
                json.dumps(s.to_event()).encode(),
                RAW_TOPIC,
                part,
                offset,
                s.captured_at + timedelta(seconds=2),
            )
            state, out = apply_snapshot(self.states.get(s.entity_key), s)
            self.states[s.entity_key] = state
            self.outcomes[out.reason if isinstance(out, Ignored) else type(out).__name__] += 1
            items.append(
                DeadLetter(env, out.reason, "series") if isinstance(out, Refused) else (out, env)
            )
            self.oracle.see(s)
        return items

    def write(self, items: list[Item]) -> None:
        store = InsightStore(self.dsn, consumer=CONSUMER)
        try:
            store.write(build_batch(items))
        finally:
            store.close()

    def feed(self, snaps: Iterable[Snapshot]) -> list[Item]:
        items = self.fold(snaps)
        self.write(items)
        self.batches.append(items)
        return items


def connect(dsn: str, autocommit: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=autocommit)


def call(dsn: str, *statements: str) -> None:
    """Procedures that may not run in a transaction block (refresh, run_job)."""
    with connect(dsn, autocommit=True) as conn:
        for st in statements:
            conn.execute(st)


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def run_policy(dsn: str, proc: str, relation: str) -> None:
    call(dsn, f"CALL run_job({job_id(dsn, proc, relation)})")


def refresh_policies(dsn: str) -> None:
    """Every refresh policy once, each aggregate after the one it is built on."""
    for view in CAGGS:
        run_policy(dsn, "policy_refresh_continuous_aggregate", view)


def job_id(dsn: str, proc: str, relation: str) -> int:
    rows = query(
        dsn,
        "SELECT job_id FROM timescaledb_information.jobs "
        "WHERE proc_name = %s AND hypertable_schema = 'public' AND hypertable_name = %s",
        (proc, relation),
    )
    assert len(rows) == 1, f"expected one {proc} job on {relation}, got {rows}"
    return int(rows[0][0])


# ---------------------------------------------------------------------------- data


def _local(day: date, hh: int, mm: int, tz: str) -> datetime:
    return datetime.combine(day, time(hh, mm), ZoneInfo(tz)).astimezone(UTC)


@dataclass(frozen=True)
class Entity:
    workspace: str
    provider: str
    account: str
    entity: str
    tz: str
    currency: str

    def snap(self, captured_at: datetime, report_date: date, v: Vals) -> Snapshot:
        return Snapshot(
            workspace_id=self.workspace,
            provider=self.provider,
            account_id=self.account,
            entity_level="ad",
            entity_id=self.entity,
            campaign_id=f"cmp-{self.account}",
            adset_id=f"set-{self.entity}",
            report_date=report_date,
            timezone=self.tz,
            currency=self.currency,
            captured_at=captured_at,
            metrics=Metrics(*v),
        )


ACCOUNTS = ((NY, "meta", "act-ny", "USD"), (KTM, "google", "act-ktm", "NPR"))


def _grow(rng: random.Random, v: Vals) -> Vals:
    spend = Decimal(rng.randint(150, 4000)) / 100
    imps = rng.randint(200, 3000)
    return _add(
        v,
        (
            spend,
            imps,
            rng.randint(0, imps // 20),
            Decimal(rng.randint(0, 6)) / 2,
            spend * Decimal(rng.randint(5, 40)) / 10,
        ),
    )


def _day(
    rng: random.Random, ent: Entity, day: date, times: list[tuple[int, int]]
) -> list[Snapshot]:
    v = ZERO
    out = []
    for hh, mm in times:
        v = _grow(rng, v)
        out.append(ent.snap(_local(day, hh, mm, ent.tz), day, v))
    return out


def main_arrivals(now: datetime) -> list[tuple[datetime, Snapshot]]:
    """2 workspaces x 2 accounts (New York, Kathmandu) x 2 ads, over the account-local
    days before yesterday (Y) and yesterday (T): Y's snapshots, T's from 00:10 (the
    rollover), a restatement of Y captured on T (spend down, conversions and revenue up),
    an out-of-order snapshot (ad-2: Y 13:20 arrives after Y 18:00), a duplicate (ad-1:
    T 06:30 twice) and one conflicting redelivery (refused). All before ``now``."""
    rng = random.Random(20260511)
    arrivals: list[tuple[datetime, Snapshot]] = []
    for ws in (WS_A, WS_B):
        for tz, provider, account, currency in ACCOUNTS:
            today = now.astimezone(ZoneInfo(tz)).date()
            t_day, y_day = today - timedelta(days=1), today - timedelta(days=2)
            for ad in ("ad-1", "ad-2"):
                ent = Entity(ws, provider, account, ad, tz, currency)
                # ad-1's last Y snapshot lands in Y's last 15-minute bucket (as will the
                # restatement); ad-2's restatement lands in an empty last bucket.
                y_times = [(7, 5), (9, 31), (9, 44), (13, 20), (18, 0)]
                y_times.append((23, 50) if ad == "ad-1" else (21, 10))
                ys = _day(rng, ent, y_day, y_times)
                ts = _day(rng, ent, t_day, [(0, 10), (6, 30), (12, 15), (17, 45)])
                last = ys[-1].metrics
                restated = ent.snap(
                    _local(t_day, 9, 0, tz),
                    y_day,
                    (
                        last.spend - Decimal("1.37"),
                        last.impressions - 40,
                        last.clicks,
                        last.conversions + Decimal("2.5"),
                        last.revenue + Decimal("19.99"),
                    ),
                )
                arrivals.extend((s.captured_at, s) for s in (*ys, *ts, restated))
                if ad == "ad-2":  # Y 13:20 is delivered after Y 18:00: stale
                    stale = ys[3]
                    arrivals.remove((stale.captured_at, stale))
                    arrivals.append((ys[4].captured_at + timedelta(minutes=1), stale))
                else:  # T 06:30 redelivered: duplicate
                    arrivals.append((ts[1].captured_at + timedelta(minutes=5), ts[1]))
                if ws == WS_B and tz == NY and ad == "ad-1":  # same capture, other numbers
                    bad = ent.snap(ts[2].captured_at, t_day, _grow(rng, ts[2].metrics.as_tuple()))
                    arrivals.append((ts[2].captured_at + timedelta(minutes=3), bad))
    arrivals.sort(key=lambda a: a[0])
    assert arrivals[-1][0] < now
    return arrivals


OLD = Entity(WS_A, "meta", "act-ny", "ad-old", NY, "USD")  # ~10 days old: compressed raw chunks
ANCIENT = Entity(WS_B, "google", "act-ktm", "ad-ancient", KTM, "NPR")  # ~100 days: retention


def history(now: datetime) -> list[Snapshot]:
    rng = random.Random(7)
    old_day = now.astimezone(ZoneInfo(NY)).date() - timedelta(days=10)
    ancient_day = now.astimezone(ZoneInfo(KTM)).date() - timedelta(days=100)
    return [
        *_day(rng, OLD, old_day, [(8, 0), (12, 5), (20, 40), (23, 20)]),
        *_day(rng, ANCIENT, ancient_day, [(10, 0), (16, 20)]),
    ]


# The rollups, each kept by the writer's commit: the campaign-days and account-days
# recomputed from metrics_daily's rows, the account buckets by differences around the
# metrics_15m upsert (with the count of ad rows beneath each).
ROLLUPS = (
    ("metrics_campaign_daily", "workspace_id::text, provider, account_id, campaign_id, report_date, currency",
     VALS_SQL, "metrics_daily", SUMS_SQL),
    ("metrics_account_daily", "workspace_id::text, provider, account_id, report_date, currency",
     VALS_SQL, "metrics_daily", SUMS_SQL),
    ("metrics_account_15m", "workspace_id::text, provider, account_id, report_date, currency, bucket_start",
     f"{VALS_SQL}, ad_rows", "metrics_15m", f"{SUMS_SQL}, count(*)::int"),
)
# The analysts' daily aggregates (migration 0010) equal metrics_daily's sums once their
# refresh policies ran (days after their watermark: always).
ANALYST = (
    ("analyst_campaign_daily", "workspace_id::text, provider, account_id, campaign_id, report_date, currency"),
    ("analyst_account_daily", "workspace_id::text, provider, account_id, report_date, currency"),
)


def analyst_rows(dsn: str, view: str, key: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(the aggregate's rows, the same sums written here over metrics_daily), sorted."""
    order = ", ".join(str(n + 1) for n in range(key.count(",") + 1))
    kept = query(dsn, f"SELECT {key}, timezone, {VALS_SQL} FROM {view} ORDER BY {order}")
    expected = query(
        dsn, f"SELECT {key}, min(timezone), {SUMS_SQL} FROM metrics_daily GROUP BY {order} ORDER BY {order}"
    )
    return kept, expected


# ---------------------------------------------------------------------------- checks


def per_series(dsn: str, sql: str) -> dict[SeriesKey, Vals]:
    return {(r[0], r[1], r[2], r[3], r[4]): _vals(r[5:]) for r in query(dsn, sql)}


def check_invariants(world: World) -> None:
    """Every table agrees, per series, with the others and with the oracle."""
    dsn = world.dsn
    daily_expected = world.oracle.daily()
    daily = per_series(dsn, f"SELECT {KEY_SQL}, {VALS_SQL} FROM metrics_daily")
    assert daily == daily_expected

    # The rollups the pipeline keeps in the same transaction equal the sums of the rows
    # beneath them: (rollup, its key, its columns, the source, the source's sums).
    for rollup, key, cols, source, sums in ROLLUPS:
        order = ", ".join(str(n + 1) for n in range(key.count(",") + 1))
        kept = query(dsn, f"SELECT {key}, {cols} FROM {rollup} ORDER BY {order}")
        expected = query(dsn, f"SELECT {key}, {sums} FROM {source} GROUP BY {order} ORDER BY {order}")
        assert kept and kept == expected, rollup

    last_captured = {
        tuple(r[:5]): r[5]
        for r in query(dsn, f"SELECT {KEY_SQL}, last_captured_at FROM metrics_daily")
    }
    assert last_captured == {k: c for k, (c, _) in world.oracle.latest.items()}

    buckets = per_series(dsn, f"SELECT {KEY_SQL}, {SUMS_SQL} FROM metrics_15m GROUP BY {KEY_SQL}")
    hourly = per_series(dsn, f"SELECT {KEY_SQL}, {SUMS_SQL} FROM metrics_hourly GROUP BY {KEY_SQL}")
    assert buckets == daily_expected
    assert hourly == daily_expected
    for view, key in ANALYST:
        kept, expected = analyst_rows(dsn, view, key)
        assert kept and kept == expected, view

    expected_kept = {k: v for k, v in daily_expected.items() if k not in world.raw_gone}
    deltas = per_series(dsn, f"SELECT {KEY_SQL}, {SUMS_SQL} FROM metric_deltas GROUP BY {KEY_SQL}")
    latest = per_series(
        dsn,
        f"SELECT DISTINCT ON ({KEY_SQL}) {KEY_SQL}, {VALS_SQL} FROM insight_snapshots "
        f"ORDER BY {KEY_SQL}, captured_at DESC",
    )
    assert deltas == expected_kept
    assert latest == expected_kept

    # Finer than per series: each 15-minute bucket and each hour, against the oracle.
    b_rows = query(dsn, f"SELECT {KEY_SQL}, bucket_start, {VALS_SQL} FROM metrics_15m")
    assert {(tuple(r[:5]), r[5]): _vals(r[6:]) for r in b_rows} == world.oracle.buckets
    h_rows = query(dsn, f"SELECT {KEY_SQL}, bucket_start, {VALS_SQL} FROM metrics_hourly")
    assert {(tuple(r[:5]), r[5]): _vals(r[6:]) for r in h_rows} == world.oracle.hourly()

    # Append-only tables hold each applied snapshot exactly once (replays add nothing).
    ((n_snap,),) = query(dsn, "SELECT count(*) FROM insight_snapshots")
    ((n_delta,),) = query(dsn, "SELECT count(*) FROM metric_deltas")
    expected_rows = world.oracle.applied - world.raw_gone_rows
    assert n_snap == n_delta == expected_rows

    progress = dict(
        query(
            dsn,
            "SELECT partition, next_offset FROM pipeline_progress WHERE consumer = %s AND topic = %s",
            (CONSUMER, RAW_TOPIC),
        )
    )
    assert progress == world.offsets


def hourly_at(dsn: str, key: SeriesKey, hour: datetime) -> Vals | None:
    rows = query(
        dsn,
        f"SELECT {VALS_SQL} FROM metrics_hourly WHERE workspace_id = %s AND provider = %s "
        "AND account_id = %s AND entity_id = %s AND report_date = %s AND bucket_start = %s",
        (*key, hour),
    )
    assert len(rows) <= 1, rows
    return _vals(rows[0]) if rows else None


def _materialization_of(dsn: str, view: str) -> str:
    ((name,),) = query(
        dsn,
        "SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates "
        "WHERE view_name = %s",
        (view,),
    )
    return str(name)


def chunk_compressed(dsn: str, table: str, ts: datetime) -> bool:
    rows = query(
        dsn,
        "SELECT is_compressed FROM timescaledb_information.chunks WHERE hypertable_schema = "
        "'public' AND hypertable_name = %s AND range_start <= %s AND %s < range_end",
        (table, ts, ts),
    )
    assert len(rows) == 1, f"expected one {table} chunk holding {ts}, got {rows}"
    return bool(rows[0][0])


def dump(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored value but the wall-clock bookkeeping columns."""
    tables = {
        "insight_snapshots": "ingested_at",
        "metric_deltas": "",
        "metrics_15m": "",
        "metrics_daily": "updated_at",
        "metrics_campaign_daily": "updated_at",
        "metrics_account_daily": "updated_at",
        "metrics_account_15m": "",
        "pipeline_progress": "committed_at",
    }
    out = {}
    with connect(dsn) as conn:
        for table, skip in tables.items():
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                    "'public' AND table_name = %s ORDER BY ordinal_position",
                    (table,),
                ).fetchall()
                if r[0] != skip
            ]
            col_list = ", ".join(cols)
            out[table] = conn.execute(
                f"SELECT {col_list} FROM {table} ORDER BY {col_list}"
            ).fetchall()
    return out


def metricx_leftovers(dsn: str) -> list[tuple[Any, ...]]:
    return query(
        dsn,
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relname = ANY(%s)",
        (list(METRICX_RELATIONS),),
    )


# ---------------------------------------------------------------------------- fixture

@pytest.fixture(scope="module")
def world(timescale_admin_url: str) -> Iterator[World]:
    """Migrate with the real migrations, load the data through the pipeline's own path in
    a few batches (plus one replayed batch), refresh the continuous aggregates."""
    with fresh_database(timescale_admin_url, "on") as dsn:
        pause_jobs(dsn)
        w = World(dsn, dsn.replace("postgresql://", "postgresql+psycopg://", 1), flavour_of(dsn),
                  now=datetime.now(UTC))
        w.feed(history(w.now))
        arrivals = [s for _, s in main_arrivals(w.now)]
        size = -(-len(arrivals) // 4)
        for i in range(0, len(arrivals), size):
            w.feed(arrivals[i : i + size])
        w.write(w.batches[1])  # replay an early batch after later ones
        # The history is older than the policies' windows (the pipeline refuses such
        # writes from live polls): materialised in full, as it was when it was recent.
        refresh_aggregates(dsn)
        refresh_policies(dsn)
        yield w


# ---------------------------------------------------------------------------- tests


def test_migrations_take_the_timescaledb_flavour(world: World) -> None:
    assert world.flavour == "timescaledb"
    heads = set(ScriptDirectory.from_config(alembic_config("postgresql://")).get_heads())
    assert {r[0] for r in query(world.dsn, "SELECT version_num FROM alembic_version")} == heads


def test_catalogue_has_the_hypertables_aggregate_and_policies(world: World) -> None:
    dsn = world.dsn
    hypertables = dict(
        query(
            dsn,
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = 'public'",
        )
    )
    # The account buckets (0008) are a hypertable too, uncompressed (small, rewritten
    # in place), with metrics_15m's chunk interval so that retention drops the same days;
    # so is metrics_daily (0010, on its report dates: the analysts' daily aggregates are
    # built on it), uncompressed (rewritten in place through the restatement window).
    assert hypertables == {**{t: True for t in HYPERTABLES}, "metrics_account_15m": False,
                           "metrics_daily": False}
    dims = dict(query(
        dsn,
        "SELECT hypertable_name, column_name FROM timescaledb_information.dimensions "
        "WHERE hypertable_schema = 'public'",
    ))
    assert dims["metrics_daily"] == "report_date"
    # ...without TimescaleDB's default index on report_date alone: the planner took it on
    # chunks without statistics for the commit's per-campaign probes (test_commit_plans).
    assert {r[0] for r in query(dsn, "SELECT indexname FROM pg_indexes WHERE tablename = 'metrics_daily'")} \
        == {"metrics_daily_pkey", "metrics_daily_ws_day"}
    intervals = dict(query(
        dsn,
        "SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_name IN ('metrics_15m', 'metrics_account_15m')",
    ))
    assert intervals["metrics_account_15m"] == intervals["metrics_15m"]

    caggs = query(
        dsn,
        "SELECT view_name, hypertable_name, materialized_only FROM "
        "timescaledb_information.continuous_aggregates WHERE view_schema = 'public' ORDER BY 1",
    )
    # real-time, every one; the account-day aggregate is built on the campaign-day one
    assert caggs == [
        ("analyst_account_daily", _materialization_of(dsn, "analyst_campaign_daily"), False),
        ("analyst_campaign_daily", "metrics_daily", False),
        ("metrics_hourly", "metrics_15m", False),
    ]

    kinds = dict(
        query(
            dsn,
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relname IN "
            "('metrics_daily', 'metrics_campaign_daily', 'metrics_account_daily', 'pipeline_progress')",
        )
    )
    assert kinds == {"metrics_daily": "r", "metrics_campaign_daily": "r", "metrics_account_daily": "r",
                     "pipeline_progress": "r"}  # tables the pipeline writes (metrics_daily's chunks)

    jobs = query(
        dsn,
        "SELECT proc_name, hypertable_name, (config->>'start_offset')::interval, "
        "(config->>'end_offset')::interval, (config->>'compress_after')::interval, "
        "(config->>'drop_after')::interval FROM timescaledb_information.jobs "
        "WHERE hypertable_schema = 'public'",
    )
    refresh = {j[1]: (j[2], j[3]) for j in jobs if j[0] == "policy_refresh_continuous_aggregate"}
    compress = {j[1]: j[4] for j in jobs if j[0] == "policy_compression"}
    retain = {j[1]: j[5] for j in jobs if j[0] == "policy_retention"}
    assert sorted(j[0] for j in jobs) == sorted(
        ["policy_refresh_continuous_aggregate"] * 3
        + ["policy_compression"] * 3
        + ["policy_retention"] * 5
    ), jobs

    # A restatement captured on day C for day C - W is booked in the last 15 minutes of
    # day C - W + 1 (local): up to W days plus the DST hour and a bucket before now.
    window = timedelta(days=max(RESTATEMENT_WINDOW_DAYS, META_RESTATEMENT_DAYS))
    assert set(refresh) == set(CAGGS)
    start_offset, end_offset = refresh["metrics_hourly"]
    assert start_offset >= window + timedelta(hours=1, minutes=15)
    assert timedelta(0) <= end_offset <= timedelta(hours=1)
    # The daily ones are on account-local report dates, which run up to a day ahead of
    # UTC: the restated date is at most W + 1 days before the UTC date.
    for view in ("analyst_campaign_daily", "analyst_account_daily"):
        start, end = refresh[view]
        assert start > window + timedelta(days=1), view
        assert timedelta(0) <= end <= timedelta(days=1), view  # today and yesterday: real time

    assert set(compress) == set(HYPERTABLES)
    for raw in RAW_TABLES:
        assert timedelta(0) < compress[raw] <= timedelta(days=7)
    assert compress["metrics_15m"] >= window + timedelta(days=1)  # still written till then

    assert set(retain) == {*HYPERTABLES, "metrics_hourly", "metrics_account_15m"}  # not metrics_daily
    assert retain["metrics_account_15m"] == retain["metrics_15m"]
    for relation, drop_after in retain.items():
        assert drop_after > start_offset, relation
    for raw in RAW_TABLES:
        assert retain[raw] > compress[raw]
    assert retain["metrics_hourly"] <= retain["metrics_15m"]


def test_every_table_agrees_with_the_oracle(world: World) -> None:
    # The data set exercised what it was built for.
    assert world.outcomes["stale"] == 4
    assert world.outcomes["duplicate"] == 4
    assert world.outcomes["Refused"] == 1
    restated = [
        k
        for k, (captured, _) in world.oracle.latest.items()
        if k[3] in ("ad-1", "ad-2")
        and captured.astimezone(ZoneInfo(NY if k[2] == "act-ny" else KTM)).date() > k[4]
    ]
    assert len(restated) == 8  # every main entity's Y was restated (captured on T)
    check_invariants(world)


def test_replaying_every_batch_in_reverse_order_changes_nothing(world: World) -> None:
    before = dump(world.dsn)
    assert len(before["insight_snapshots"]) == world.oracle.applied - world.raw_gone_rows
    for items in reversed(world.batches):
        world.write(items)
    assert dump(world.dsn) == before
    check_invariants(world)


def test_real_time_aggregation_shows_rows_past_the_watermark(world: World) -> None:
    dsn = world.dsn
    ((watermark,),) = query(
        dsn,
        "SELECT _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(h.id)) "
        "FROM _timescaledb_catalog.hypertable h JOIN timescaledb_information.continuous_aggregates c "
        "ON c.materialization_hypertable_schema = h.schema_name "
        "AND c.materialization_hypertable_name = h.table_name WHERE c.view_name = 'metrics_hourly'",
    )
    hour = _floor(datetime.now(UTC), 60) + timedelta(hours=2)  # a new hour, past any refresh
    assert hour >= watermark
    ent = Entity(WS_A, "meta", "act-ny", "ad-1", NY, "USD")
    day = hour.astimezone(ZoneInfo(NY)).date()  # NY offsets are whole hours: one local day
    first = ent.snap(hour + timedelta(minutes=5), day, _grow(random.Random(1), ZERO))
    second = ent.snap(
        hour + timedelta(minutes=35), day, _grow(random.Random(2), first.metrics.as_tuple())
    )
    key = _series(first)
    assert hourly_at(dsn, key, hour) is None

    world.feed([first, second])  # no refresh after this

    assert hourly_at(dsn, key, hour) == second.metrics.as_tuple()
    assert world.oracle.hourly()[(key, hour)] == second.metrics.as_tuple()
    check_invariants(world)


def test_compression_restatement_refresh_and_retention(world: World) -> None:
    dsn = world.dsn
    old = [s for items in world.batches for s in _applied(items) if s.entity_id == OLD.entity]
    ancient = [
        s for items in world.batches for s in _applied(items) if s.entity_id == ANCIENT.entity
    ]
    main = [
        s for items in world.batches for s in _applied(items) if s.entity_id in ("ad-1", "ad-2")
    ]
    assert old and ancient and main

    for table in HYPERTABLES:
        call(dsn, f"CALL run_job({job_id(dsn, 'policy_compression', table)})")
    # Raw chunks older than a few days are compressed, recent ones are not; metrics_15m
    # keeps its chunks uncompressed through the restatement window.
    for table in RAW_TABLES:
        assert chunk_compressed(dsn, table, old[0].captured_at), table
        assert chunk_compressed(dsn, table, ancient[0].captured_at), table
        assert not any(chunk_compressed(dsn, table, s.captured_at) for s in main), table
    old_key = _series(old[0])
    old_buckets = [b for (k, b) in world.oracle.buckets if k == old_key]
    ancient_buckets = [b for (k, b) in world.oracle.buckets if k == _series(ancient[0])]
    assert not any(chunk_compressed(dsn, "metrics_15m", b) for b in old_buckets)
    assert all(chunk_compressed(dsn, "metrics_15m", b) for b in ancient_buckets)
    check_invariants(world)  # compressed chunks read the same

    world.write(world.batches[0])  # a replay into compressed chunks adds nothing
    check_invariants(world)

    # A restatement of the 10-day-old report date, captured now: its hour was
    # materialized, so metrics_hourly shows the old value until the refresh policy runs.
    last = old[-1]
    day_end = datetime.combine(last.report_date + timedelta(days=1), time(0), ZoneInfo(NY))
    restated_hour = _floor(day_end.astimezone(UTC) - timedelta(minutes=15), 60)
    before = hourly_at(dsn, old_key, restated_hour)
    assert before is not None and before == world.oracle.hourly()[(old_key, restated_hour)]
    before_daily = {view: analyst_rows(dsn, view, key)[0] for view, key in ANALYST}
    m = last.metrics
    world.feed(
        [
            OLD.snap(
                datetime.now(UTC) - timedelta(minutes=30),
                last.report_date,
                (
                    m.spend - Decimal("3.10"),
                    m.impressions,
                    m.clicks + 2,
                    m.conversions + Decimal("1.5"),
                    m.revenue + Decimal("42.00"),
                ),
            )
        ]
    )
    assert hourly_at(dsn, old_key, restated_hour) == before, (
        "a materialized bucket changed without a refresh: the refresh below proves nothing"
    )
    # The analysts' daily aggregates had materialised that date too: still the old sums.
    for view, key in ANALYST:
        kept, expected = analyst_rows(dsn, view, key)
        assert kept == before_daily[view] != expected, view
    refresh_policies(dsn)
    assert hourly_at(dsn, old_key, restated_hour) != before
    check_invariants(world)  # every aggregate, the daily ones included, has the restatement

    for relation in (*HYPERTABLES, "metrics_hourly", "metrics_account_15m"):
        call(dsn, f"CALL run_job({job_id(dsn, 'policy_retention', relation)})")
    ancient_key = _series(ancient[0])
    for table in RAW_TABLES:
        assert query(
            dsn, f"SELECT count(*) FROM {table} WHERE entity_id = %s", (ANCIENT.entity,)
        ) == [(0,)]
    world.raw_gone = {ancient_key}
    world.raw_gone_rows = len(ancient)
    assert ancient_key in per_series(dsn, f"SELECT {KEY_SQL}, {VALS_SQL} FROM metrics_daily")
    check_invariants(world)  # rollups keep what the raw tables dropped


def _applied(items: list[Item]) -> list[Snapshot]:
    return [
        it[0].snapshot
        for it in items
        if not isinstance(it, DeadLetter) and not isinstance(it[0], Ignored)
    ]


def test_downgrade_removes_every_metricx_object(world: World) -> None:
    downgrade(world.url)
    world.downgraded = True
    assert metricx_leftovers(world.dsn) == []
    assert query(world.dsn, "SELECT count(*) FROM alembic_version") == [(0,)]
    assert (
        query(
            world.dsn,
            "SELECT hypertable_name FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = 'public'",
        )
        == []
    )
    assert (
        query(
            world.dsn,
            "SELECT view_name FROM timescaledb_information.continuous_aggregates",
        )
        == []
    )
    assert (
        query(
            world.dsn,
            "SELECT job_id, proc_name FROM timescaledb_information.jobs "
            "WHERE hypertable_name IS NOT NULL",
        )
        == []
    )
