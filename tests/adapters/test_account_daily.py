"""``metrics_account_daily`` (the account-day rollup kept by ``InsightStore.write``,
recomputed from ``metrics_campaign_daily``) equals the sums of ``metrics_daily`` after
concurrent writers from several commit partitions writing *different campaigns of the
same accounts*, after replays, and when an account-day disappears from a currency.

Real PostgreSQL (``make services-up``), the real writer, the real delta logic."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

import adapters.timescale as ts
from adapters.timescale import ACCOUNT_DAILY, CREATE_STAGE, INSERT_STAGE, MOVE, run_move
from schemas.insight import Snapshot
from schemas.metrics import Metrics
from tests.adapters.test_campaign_daily import Writer, race, rows, until
from tests.integration.conftest import database, services  # noqa: F401 - fixtures
from tests.pg_locks import waiting_on_a_lock

pytestmark = pytest.mark.services

KEY = "workspace_id, provider, account_id, report_date, currency"
SUMS = ("sum(spend), sum(impressions)::bigint, sum(clicks)::bigint, sum(conversions), sum(revenue), "
        "min(timezone)")
FROM_DAILY = f"SELECT {KEY}, {SUMS} FROM metrics_daily GROUP BY {KEY} ORDER BY {KEY}"
FROM_CAMPAIGNS = f"SELECT {KEY}, {SUMS} FROM metrics_campaign_daily GROUP BY {KEY} ORDER BY {KEY}"
FROM_ROLLUP = (f"SELECT {KEY}, spend, impressions, clicks, conversions, revenue, timezone "
               f"FROM metrics_account_daily ORDER BY {KEY}")


def assert_rollup_exact(url: str) -> None:
    expected = rows(url, FROM_DAILY)
    assert expected, "nothing was written"
    assert rows(url, FROM_ROLLUP) == expected
    assert rows(url, FROM_CAMPAIGNS) == expected


def snap(ws: uuid.UUID, ad: int, campaign: int, day: date, captured_at: datetime, rng: random.Random,
         scale: int, currency: str = "USD") -> Snapshot:
    """Campaigns 2k and 2k+1 share account ``act-k`` (meta for k < 2, google beyond)."""
    account = campaign // 2
    return Snapshot(
        workspace_id=str(ws), provider="meta" if account < 2 else "google", account_id=f"act-{account}",
        entity_level="ad", entity_id=f"ad-{ad}", campaign_id=f"cmp-{campaign}", adset_id=None,
        report_date=day, timezone="UTC", currency=currency, captured_at=captured_at,
        metrics=Metrics(Decimal(scale * rng.randint(1, 900)) / 100, scale * rng.randint(10, 99),
                        scale * rng.randint(0, 9), Decimal(scale * rng.randint(0, 4)) / 2,
                        Decimal(scale * rng.randint(0, 900)) / 10),
    )


def test_concurrent_partitions_writing_campaigns_of_the_same_accounts(database: str) -> None:  # noqa: F811
    """Two writers commit different campaigns of the same account-days at the same time,
    many times over; they never share a campaign-day row, only the account-day one.
    Every account-day equals the sum of its ads after every round."""
    ws = uuid.uuid4()
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=1), today]
    campaigns = 8
    start = datetime.now(UTC) - timedelta(hours=2)

    def snaps(partition: int, r: int, rng: random.Random) -> list[Snapshot]:
        # Partition p owns the ads with ad % 2 == p, hence the campaigns with the same
        # parity: both partitions write every account, never the same campaign.
        return [snap(ws, ad, ad % campaigns, d, start + timedelta(seconds=r), rng, r + 1)
                for ad in range(partition, 5 * campaigns, 2) for d in days]

    errors, stale = race(database, 2, 40, snaps, FROM_ROLLUP, FROM_DAILY)
    assert not errors, errors
    assert stale == [], f"rounds whose rollup missed the other partition's campaigns: {stale}"
    assert_rollup_exact(database)
    (n,) = rows(database, "SELECT count(*) FROM metrics_account_daily")[0]
    assert n == campaigns // 2 * len(days)


UNLOCKED = MOVE.replace(ACCOUNT_DAILY[0] + ";\n", "")


@pytest.mark.parametrize("locked", [True, False], ids=["locked-first", "without-the-lock"])
def test_the_interleaving_where_the_last_writer_would_win_stale(database: str, locked: bool,  # noqa: F811
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The race, forced: T1 has written campaign 0 and is about to sum account 0; T2
    writes campaign 1 (account 0) and campaign 2 (account 1, whose row a third session
    holds).  Locked in key order first, T2 waits for T1 on account 0 and sums after T1
    committed: exact.  The same interleaving without the lock statement (the control,
    proving the test can fail) leaves a sum that misses the other writer's campaign."""
    assert UNLOCKED != MOVE
    ws = uuid.uuid4()
    rng = random.Random(11)
    day = datetime.now(UTC).date()
    t0 = datetime.combine(day, datetime.min.time(), UTC) + timedelta(minutes=1)  # buckets of `day`, any hour
    p1, p2 = Writer(database, 0), Writer(database, 1)
    p1.store.write(p1.batch([snap(ws, 1, 0, day, t0, rng, 1)]))
    p2.store.write(p2.batch([snap(ws, 2, 1, day, t0, rng, 1), snap(ws, 3, 2, day, t0, rng, 1)]))
    assert_rollup_exact(database)
    if not locked:  # the account-day rows exist now: without the lock, only the order changes
        monkeypatch.setattr(ts, "MOVE", UNLOCKED)
    move = ts.MOVE
    t1_batch = p1.batch([snap(ws, 1, 0, day, t0 + timedelta(minutes=1), rng, 5)])
    # T2 polls a quarter of an hour later: in another 15-minute bucket, whose account
    # bucket rows T1 does not hold (else T2 would wait for T1 there, before any
    # campaign-day, and this interleaving could not happen).
    t2_batch = p2.batch([snap(ws, 2, 1, day, t0 + timedelta(minutes=16), rng, 7),
                         snap(ws, 3, 2, day, t0 + timedelta(minutes=16), rng, 7)])
    first, sep, rest = move.partition(ACCOUNT_DAILY[1])
    assert sep
    with psycopg.connect(database) as holder, psycopg.connect(database) as t1:
        holder.execute("SELECT 1 FROM metrics_account_daily WHERE workspace_id = %s AND account_id = 'act-1' "
                       "FOR UPDATE", (ws,))
        t1.execute(CREATE_STAGE)
        t1_rows = p1.store._ws(t1_batch.rows)
        t1.cursor().executemany(INSERT_STAGE, t1_rows)
        run_move(t1, t1_rows, first.removesuffix(";\n"))  # campaign-days written, account-day locked (if locked)
        t2 = threading.Thread(target=p2.store.write, args=(t2_batch,))
        t2.start()
        until(lambda: p2.store._conn is not None and waiting_on_a_lock(database, p2.store._conn.info.backend_pid),
              "T2 never waited")
        sums = threading.Thread(target=run_move, args=(t1, t1_rows, sep + rest))
        sums.start()
        if locked:
            # T1 holds its account-day: its sums finish while the third session still
            # holds T2 back (they never wait for T2).
            sums.join(timeout=60)
            assert not sums.is_alive(), "T1's sums waited although T1 locked first"
        holder.rollback()
        sums.join(timeout=10)
        assert not sums.is_alive()
        t1.commit()
        t2.join(timeout=10)
        assert not t2.is_alive()
    p1.store.close()
    p2.store.close()
    assert rows(database, FROM_CAMPAIGNS) == rows(database, FROM_DAILY)  # campaign-days are right either way
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
            w.store.write(w.batch([snap(ws, ad, ad % 4, day, t0 + timedelta(minutes=r), rng, r + 1)
                                   for ad in range(8)]))
        before = rows(database, "SELECT *, xmin::text FROM metrics_account_daily ORDER BY 1, 2, 3, 4, 5")
        for b in (w.batches[0], w.batches[2], w.batches[1]):
            w.store.write(b)
    finally:
        w.store.close()
    # Same sums, and not even rewritten (same updated_at and row version).
    assert rows(database, "SELECT *, xmin::text FROM metrics_account_daily ORDER BY 1, 2, 3, 4, 5") == before
    assert_rollup_exact(database)


def test_an_account_day_that_changes_currency_moves(database: str) -> None:  # noqa: F811
    """The old currency's account-day row goes when no campaign is left in it; it stays
    while another campaign of the account still spends in it."""
    ws = uuid.uuid4()
    w = Writer(database, 0)
    rng = random.Random(5)
    day = datetime.now(UTC).date()
    t0 = datetime.now(UTC) - timedelta(hours=1)
    q = "SELECT currency FROM metrics_account_daily ORDER BY 1"
    try:
        w.store.write(w.batch([snap(ws, 1, 0, day, t0, rng, 1, "USD"), snap(ws, 2, 1, day, t0, rng, 1, "USD")]))
        w.store.write(w.batch([snap(ws, 1, 0, day, t0 + timedelta(minutes=1), rng, 2, "EUR")]))
        assert_rollup_exact(database)
        assert rows(database, q) == [("EUR",), ("USD",)]
        w.store.write(w.batch([snap(ws, 2, 1, day, t0 + timedelta(minutes=2), rng, 3, "EUR")]))
    finally:
        w.store.close()
    assert_rollup_exact(database)
    assert rows(database, q) == [("EUR",)]


def test_a_zero_campaign_day_leaving_a_currency_rewrites_the_account_day(database: str) -> None:  # noqa: F811
    """A campaign-day that summed to zero leaves USD (its ad moved to EUR) while another
    campaign keeps the USD account-day: the sums stay, but the row must be rewritten, or
    its version stands still and the dashboard keeps ranking the gone campaign."""
    ws = uuid.uuid4()
    w = Writer(database, 0)
    day = datetime.now(UTC).date()
    t0 = datetime.now(UTC) - timedelta(hours=1)
    zero = snap(ws, 1, 0, day, t0, random.Random(1), 0, "USD")
    assert zero.metrics == Metrics(Decimal(0), 0, 0, Decimal(0), Decimal(0))
    usd_row = ("SELECT spend, impressions, clicks, conversions, revenue, xmin::text FROM metrics_account_daily "
               "WHERE currency = 'USD'")
    campaigns = "SELECT campaign_id FROM metrics_campaign_daily WHERE currency = 'USD' ORDER BY 1"
    try:
        w.store.write(w.batch([zero, snap(ws, 2, 1, day, t0, random.Random(2), 1, "USD")]))
        assert rows(database, campaigns) == [("cmp-0",), ("cmp-1",)]
        before = rows(database, usd_row)
        w.store.write(w.batch([snap(ws, 1, 0, day, t0 + timedelta(minutes=1), random.Random(3), 1, "EUR")]))
    finally:
        w.store.close()
    assert rows(database, campaigns) == [("cmp-1",)]
    after = rows(database, usd_row)
    assert [r[:-1] for r in after] == [r[:-1] for r in before]  # same sums...
    assert after[0][-1] != before[0][-1]  # ...in a rewritten row
    assert_rollup_exact(database)


def test_the_migration_backfills_from_the_campaign_days(database: str) -> None:  # noqa: F811
    """Data written before 0007 (the campaign-day branch at 0005) is in the account-day
    rollup after upgrading; a downgrade to 0005 drops the table and restores 0005's index."""
    from schemas.migrate import downgrade, upgrade

    ws = uuid.uuid4()
    w = Writer(database, 0)
    rng = random.Random(9)
    day = datetime.now(UTC).date()
    try:
        w.store.write(w.batch([snap(ws, ad, ad % 4, day, datetime.now(UTC) - timedelta(minutes=5), rng, 1)
                               for ad in range(8)]))
    finally:
        w.store.close()
    sa = database.replace("postgresql://", "postgresql+psycopg://", 1)
    idx = "SELECT indexname FROM pg_indexes WHERE tablename = 'metrics_campaign_daily' ORDER BY 1"
    after = rows(database, idx)
    downgrade(sa, "0005")
    assert rows(database, "SELECT to_regclass('metrics_account_daily') IS NULL") == [(True,)]
    assert ("metrics_campaign_daily_ws_day",) in rows(database, idx)
    upgrade(sa, "auto")
    assert rows(database, idx) == after
    assert_rollup_exact(database)
