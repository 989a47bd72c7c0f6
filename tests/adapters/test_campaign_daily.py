"""``metrics_campaign_daily`` (the campaign-day rollup kept by ``InsightStore.write``)
equals the sums of ``metrics_daily`` after concurrent writers from several commit
partitions, after replays, and when a campaign-day disappears from a currency.

Real PostgreSQL (``make services-up``), the real writer, the real delta logic."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

import adapters.timescale as ts
from adapters.timescale import CAMPAIGN_DAILY, CREATE_STAGE, INSERT_STAGE, MOVE, InsightStore, run_move
from domain.batch import build_batch
from domain.deltas import EntityState, apply_snapshot
from schemas.batch import Batch
from schemas.envelope import Envelope
from schemas.insight import Snapshot
from schemas.metrics import Metrics
from tests.integration.conftest import database, services  # noqa: F401 - fixtures
from tests.pg_locks import waiting_on_a_lock

pytestmark = pytest.mark.services

KEY = "workspace_id, provider, account_id, campaign_id, report_date, currency"
SUMS = ("sum(spend), sum(impressions)::bigint, sum(clicks)::bigint, sum(conversions), sum(revenue), "
        "min(timezone)")
FROM_DAILY = f"SELECT {KEY}, {SUMS} FROM metrics_daily GROUP BY {KEY} ORDER BY {KEY}"
FROM_ROLLUP = (f"SELECT {KEY}, spend, impressions, clicks, conversions, revenue, timezone "
               f"FROM metrics_campaign_daily ORDER BY {KEY}")


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


BUCKET_KEY = "workspace_id, provider, account_id, report_date, currency, bucket_start"
FROM_15M = (f"SELECT {BUCKET_KEY}, sum(spend), sum(impressions)::bigint, sum(clicks)::bigint, sum(conversions), "
            f"sum(revenue), count(*)::int FROM metrics_15m GROUP BY {BUCKET_KEY} ORDER BY {BUCKET_KEY}")
FROM_ACCOUNT_15M = (f"SELECT {BUCKET_KEY}, spend, impressions, clicks, conversions, revenue, ad_rows "
                    f"FROM metrics_account_15m ORDER BY {BUCKET_KEY}")


def assert_rollup_exact(url: str) -> None:
    """Both rollups kept by the writer: campaign-days (recomputed) and account buckets
    (by differences) equal the sums of the ad rows beneath them."""
    expected = rows(url, FROM_DAILY)
    assert expected, "nothing was written"
    assert rows(url, FROM_ROLLUP) == expected
    buckets = rows(url, FROM_15M)
    assert buckets, "no 15-minute rows"
    assert rows(url, FROM_ACCOUNT_15M) == buckets


class Writer:
    """One commit partition: its own entities' state and its own InsightStore."""

    def __init__(self, url: str, partition: int) -> None:
        self.store = InsightStore(url, consumer="campaign-test")
        self.partition = partition
        self.states: dict[tuple[str, ...], EntityState] = {}
        self.offset = 0
        self.batches: list[Batch] = []

    def batch(self, snaps: list[Snapshot]) -> Batch:
        items: list[Any] = []
        for s in snaps:
            k = (s.workspace_id, s.provider, s.account_id, s.entity_id)
            self.states[k], out = apply_snapshot(self.states.get(k), s)
            items.append((out, Envelope(None, None, "raw", self.partition, self.offset, s.captured_at)))
            self.offset += 1
        b = build_batch(items)
        self.batches.append(b)
        return b


def snap(ws: uuid.UUID, ad: int, campaign: int, day: date, captured_at: datetime, rng: random.Random,
         scale: int, currency: str = "USD") -> Snapshot:
    return Snapshot(
        workspace_id=str(ws), provider="meta" if campaign % 2 else "google", account_id=f"act-{campaign % 3}",
        entity_level="ad", entity_id=f"ad-{ad}", campaign_id=f"cmp-{campaign}", adset_id=None,
        report_date=day, timezone="UTC", currency=currency, captured_at=captured_at,
        metrics=Metrics(Decimal(scale * rng.randint(1, 900)) / 100, scale * rng.randint(10, 99),
                        scale * rng.randint(0, 9), Decimal(scale * rng.randint(0, 4)) / 2,
                        Decimal(scale * rng.randint(0, 900)) / 10),
    )


def race(url: str, partitions: int, rounds: int, snaps: Callable[[int, int, random.Random], list[Snapshot]],
         rollup: str, expected: str) -> tuple[list[BaseException], list[int]]:
    """Commit partitions (threads, own connections) each commit one batch per round, all
    at the same moment; after every round partition 0 compares the ``rollup`` query with
    the ``expected`` one (only a race's *last* loser would survive to the end).  Returns
    the errors and the rounds whose rollup was wrong; closes the writers."""
    writers = [Writer(url, p) for p in range(partitions)]
    errors: list[BaseException] = []
    stale: list[int] = []
    barrier = threading.Barrier(partitions)

    def run(w: Writer) -> None:
        rng = random.Random(w.partition)
        try:
            for r in range(rounds):
                batch = w.batch(snaps(w.partition, r, rng))
                barrier.wait(timeout=30)
                w.store.write(batch)
                barrier.wait(timeout=30)
                if w.partition == 0 and rows(url, rollup) != rows(url, expected):
                    stale.append(r)
                barrier.wait(timeout=30)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for w in writers:
        w.store.close()
    return errors, stale


def test_concurrent_partitions_writing_ads_of_the_same_campaigns(database: str) -> None:  # noqa: F811
    """Two writers (threads, own connections) commit different ads of the same
    campaign-days at the same time, many times over; every campaign-day equals the sum of
    its ads.  Without the lock-then-sum order, one commit's sum misses the other's ads."""
    ws = uuid.uuid4()
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=1), today]
    campaigns = 4
    start = datetime.now(UTC) - timedelta(hours=2)

    def snaps(partition: int, r: int, rng: random.Random) -> list[Snapshot]:
        # Partition p owns the ads with ad % 2 == p; every campaign has ads on both.
        return [snap(ws, ad, ad % campaigns, d, start + timedelta(seconds=r), rng, r + 1)
                for ad in range(partition, 20 * campaigns, 2) for d in days]

    errors, stale = race(database, 2, 40, snaps, FROM_ROLLUP, FROM_DAILY)
    assert not errors, errors
    assert stale == [], f"rounds whose rollup missed the other partition's ads: {stale}"
    assert_rollup_exact(database)
    (n,) = rows(database, "SELECT count(*) FROM metrics_campaign_daily")[0]
    assert n == campaigns * len(days)


def until(cond: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


UNLOCKED = MOVE.replace(CAMPAIGN_DAILY[0] + ";\n", "")


@pytest.mark.parametrize("locked", [True, False], ids=["locked-first", "without-the-lock"])
def test_the_interleaving_where_the_last_writer_would_win_stale(database: str, locked: bool,  # noqa: F811
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The race, forced: T2 sums campaign C and then waits (on a row of C' held by a
    third session); T1 sums C before T2 commits and writes after it.  Summing before
    locking, T1's sum would miss T2's ad and T1 would win; locked in key order first, T2
    waits for T1 and T1 sums at once, without waiting for anyone: exact.  The same
    interleaving without the lock statement (the control, proving the test can fail)
    leaves a campaign-day sum that misses the other writer's ad."""
    assert UNLOCKED != MOVE
    ws = uuid.uuid4()
    rng = random.Random(11)
    day = datetime.now(UTC).date()
    t0 = datetime.combine(day, datetime.min.time(), UTC) + timedelta(minutes=1)  # buckets of `day`, any hour
    p1, p2 = Writer(database, 0), Writer(database, 1)
    # Campaign 1 has ad 1 (partition 0) and ad 2 (partition 1); campaign 2 has ad 3 (partition 1).
    p1.store.write(p1.batch([snap(ws, 1, 1, day, t0, rng, 1)]))
    p2.store.write(p2.batch([snap(ws, 2, 1, day, t0, rng, 1), snap(ws, 3, 2, day, t0, rng, 1)]))
    assert_rollup_exact(database)
    if not locked:  # the campaign-day rows exist now: without the lock, only the order changes
        monkeypatch.setattr(ts, "MOVE", UNLOCKED)
    move = ts.MOVE
    t1_batch = p1.batch([snap(ws, 1, 1, day, t0 + timedelta(minutes=1), rng, 5)])
    # T2 polls a quarter of an hour later: in another 15-minute bucket, whose account
    # bucket rows T1 does not hold (else T2 would wait for T1 there, before any
    # campaign-day, and this interleaving could not happen).
    t2_batch = p2.batch([snap(ws, 2, 1, day, t0 + timedelta(minutes=16), rng, 7),
                         snap(ws, 3, 2, day, t0 + timedelta(minutes=16), rng, 7)])
    first, sep, _ = move.partition(CAMPAIGN_DAILY[1])
    assert sep
    with psycopg.connect(database) as holder, psycopg.connect(database) as t1:
        holder.execute("SELECT 1 FROM metrics_campaign_daily WHERE campaign_id = 'cmp-2' FOR UPDATE")
        t1.execute(CREATE_STAGE)
        t1_rows = p1.store._ws(t1_batch.rows)
        t1.cursor().executemany(INSERT_STAGE, t1_rows)
        run_move(t1, t1_rows, first.removesuffix(";\n"))  # up to the campaign-day sums (its locks, if locked)
        t2 = threading.Thread(target=p2.store.write, args=(t2_batch,))
        t2.start()
        until(lambda: p2.store._conn is not None and waiting_on_a_lock(database, p2.store._conn.info.backend_pid),
              "T2 never waited")
        sums = threading.Thread(target=run_move, args=(t1, t1_rows, ";\n".join(CAMPAIGN_DAILY[1:])))
        sums.start()
        if locked:
            # T1 holds its campaign-day: its sums finish while the third session still
            # holds T2 back (they never wait for T2).
            sums.join(timeout=60)
            assert not sums.is_alive(), "T1's sums waited although T1 locked first"
        holder.rollback()
        sums.join(timeout=60)
        assert not sums.is_alive()
        t1.commit()
        t2.join(timeout=60)
        assert not t2.is_alive()
    p1.store.close()
    p2.store.close()
    if locked:
        assert_rollup_exact(database)
    else:
        assert rows(database, FROM_ROLLUP) != rows(database, FROM_DAILY)


def test_a_replayed_batch_changes_nothing(database: str) -> None:  # noqa: F811
    ws = uuid.uuid4()
    w = Writer(database, 0)
    rng = random.Random(3)
    day = datetime.now(UTC).date()
    t0 = datetime.now(UTC) - timedelta(hours=1)
    try:
        for r in range(3):
            w.store.write(w.batch([snap(ws, ad, ad % 2, day, t0 + timedelta(minutes=r), rng, r + 1)
                                   for ad in range(6)]))
        before = rows(database, "SELECT *, xmin::text FROM metrics_campaign_daily ORDER BY 1, 2, 3, 4, 5, 6")
        accounts = rows(database, "SELECT *, xmin::text FROM metrics_account_daily ORDER BY 1, 2, 3, 4, 5")
        for b in (w.batches[0], w.batches[2], w.batches[1]):
            w.store.write(b)
    finally:
        w.store.close()
    # Same sums, and not even rewritten (same updated_at and row version): the
    # dashboard's reuse of settled days keys on the account-days' row versions.
    assert rows(database, "SELECT *, xmin::text FROM metrics_campaign_daily ORDER BY 1, 2, 3, 4, 5, 6") == before
    assert rows(database, "SELECT *, xmin::text FROM metrics_account_daily ORDER BY 1, 2, 3, 4, 5") == accounts
    assert_rollup_exact(database)


def test_a_campaign_day_that_changes_currency_moves(database: str) -> None:  # noqa: F811
    """The rollup follows metrics_daily even when an ad's currency changes: the old
    currency's campaign-day row goes when no ad is left in it."""
    ws = uuid.uuid4()
    w = Writer(database, 0)
    rng = random.Random(5)
    day = datetime.now(UTC).date()
    t0 = datetime.now(UTC) - timedelta(hours=1)
    try:
        w.store.write(w.batch([snap(ws, 1, 1, day, t0, rng, 1, "USD")]))
        w.store.write(w.batch([snap(ws, 1, 1, day, t0 + timedelta(minutes=1), rng, 2, "EUR")]))
    finally:
        w.store.close()
    assert_rollup_exact(database)
    assert [r[0] for r in rows(database, "SELECT currency FROM metrics_campaign_daily")] == ["EUR"]
