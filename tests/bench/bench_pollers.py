"""Poller figures, printed (never asserted): the real SDKs against the local fakes.

1. API calls per account per hour in steady state (hot loop every 15 min over today,
   warm loop twice a day over the 28/30-day window), counted by the fakes.
2. Wall time of one hot pass over N accounts x M ads (default 100 x 500) for Meta and for
   Google: SDK calls, validation/mapping to snapshots, and encoding for Kafka (the broker
   round trip is left out, so the figure is the poller's own cost), sequential and with a
   thread pool, and the extrapolation to 1,000 accounts against the 15-minute budget.

Run: ``python -m tests.bench.bench_pollers [--accounts 100] [--ads 500] [--threads 8]``.
The fakes run in this process, so their own CPU is included: the figures are an upper
bound for the poller.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from adapters.google_ads.logic import OperationBudget
from adapters.google_ads.poller import GoogleAccount, GoogleAdsPoller
from adapters.kafka import encode_snapshot
from adapters.meta.poller import MetaAccount, MetaPoller
from adapters.platform import PollResult
from domain.schedule import GOOGLE_CONVERSION_WINDOW_DAYS, META_RESTATEMENT_DAYS, local_today
from tests.fakes import google_ads_grpc as gfake
from tests.fakes import graph_api as mfake

WS = str(uuid.uuid4())
HOT_PER_HOUR = 4
WARM_PER_DAY = 2


def _encode(result: PollResult) -> int:
    return sum(len(encode_snapshot(s)[1]) for s in result.snapshots)


def _timed(label: str, jobs: list[Callable[[], PollResult]], threads: int) -> float:
    began = time.perf_counter()
    if threads <= 1:
        n = sum(len(j().snapshots) for j in jobs)
    else:
        with ThreadPoolExecutor(threads) as pool:
            n = sum(len(r.snapshots) for r in pool.map(lambda j: j(), jobs))
    took = time.perf_counter() - began
    print(f"  {label:<34} {len(jobs):>5} accounts {n:>8} snapshots {took:8.2f} s "
          f"({n / took:,.0f} snapshots/s)")
    return took


def meta_bench(accounts: int, ads: int, threads: int) -> None:
    print(f"Meta (facebook-business 26.0.3 -> local Graph API fake), {accounts} accounts x {ads} ads")
    now = datetime.now(UTC)
    tz = "America/New_York"
    today = local_today(now, tz)
    with mfake.FakeGraphApi(page_size=500).running() as fake:
        for a in range(accounts):
            acct = fake.add_account(mfake.FakeAccount(str(10_000 + a), f"EAAbench{a:05d}", tz, "USD"))
            for i in range(ads):
                acct.put(mfake.AdDay(f"c{i % 10}", f"s{i % 50}", f"{a}{i:05d}", today, Decimal(f"{i}.37"), 1000 + i,
                                     i % 97, Decimal(i % 5), Decimal(f"{i * 3}.5")))
        # Steady-state call counts on one account with the full restatement window.
        probe = fake.add_account(mfake.FakeAccount("999999", "EAAprobe0001", tz, "USD"))
        for d in range(META_RESTATEMENT_DAYS + 1):
            for i in range(ads):
                probe.put(mfake.AdDay("c", "s", f"9{i:05d}", today - timedelta(days=d), Decimal("1.5"), 10, 1))
        p = MetaPoller(MetaAccount(WS, "999999", "EAAprobe0001"), graph_url=fake.url, sleep=lambda s: None)
        hot = p.poll(today, today).api_calls
        warm = p.poll(today - timedelta(days=META_RESTATEMENT_DAYS), today - timedelta(days=1), use_async=True).api_calls
        per_hour = HOT_PER_HOUR * hot + WARM_PER_DAY * warm / 24
        print(f"  calls per hot sync {hot}, per warm sync (async, {META_RESTATEMENT_DAYS} d x {ads} ads) {warm}: "
              f"{per_hour:.1f} API calls per account per hour")

        def job(a: int) -> Callable[[], PollResult]:
            def run() -> PollResult:
                poller = MetaPoller(MetaAccount(WS, str(10_000 + a), f"EAAbench{a:05d}"), graph_url=fake.url)
                r = poller.poll(today, today, timezone=tz, currency="USD")
                _encode(r)
                return r
            return run

        jobs = [job(a) for a in range(accounts)]
        seq = _timed("hot pass, sequential", jobs, 1)
        par = _timed(f"hot pass, {threads} threads", jobs, threads)
        _extrapolate(accounts, seq, par, threads)


def google_bench(accounts: int, ads: int, threads: int) -> None:
    print(f"Google Ads (google-ads 34.0.0 -> local gRPC GoogleAdsService fake), {accounts} accounts x {ads} ads")
    now = datetime.now(UTC)
    tz = "Europe/Berlin"
    today = local_today(now, tz)
    with gfake.FakeGoogleAds().running() as fake:
        fake.batch_size = 1000
        for a in range(accounts):
            c = fake.add(gfake.FakeCustomer(str(1_000_000_000 + a), f"ya29.bench{a}", tz, "EUR"))
            for i in range(ads):
                c.put(gfake.AdDay(1 + i % 10, 100 + i % 50, 10_000 + i, today, 1_000_000 + i * 17, 100 + i, i % 50,
                                  i / 7, i * 1.25))
        budget = OperationBudget(daily_limit=10**9)

        def poller(a: int) -> GoogleAdsPoller:
            return GoogleAdsPoller(GoogleAccount(WS, str(1_000_000_000 + a), fake.developer_token,
                                                 access_token=f"ya29.bench{a}"), endpoint=fake.endpoint, budget=budget)

        p0 = poller(0)
        hot = p0.poll(today, today).api_calls
        warm = p0.poll(today - timedelta(days=GOOGLE_CONVERSION_WINDOW_DAYS), today - timedelta(days=1)).api_calls
        per_hour = HOT_PER_HOUR * hot + WARM_PER_DAY * warm / 24
        print(f"  operations per hot sync {hot}, per warm sync {warm}: {per_hour:.1f} per customer per hour "
              f"({per_hour * 24:.0f}/day; Basic access allows 15,000/day per developer token)")

        def job(a: int) -> Callable[[], PollResult]:
            def run() -> PollResult:
                r = poller(a).poll(today, today)
                _encode(r)
                return r
            return run

        jobs = [job(a) for a in range(accounts)]
        seq = _timed("hot pass, sequential", jobs, 1)
        par = _timed(f"hot pass, {threads} threads", jobs, threads)
        _extrapolate(accounts, seq, par, threads)


def _extrapolate(accounts: int, seq: float, par: float, threads: int) -> None:
    k = 1000 / accounts
    print(f"  -> 1,000 accounts: ~{seq * k:,.0f} s sequential, ~{par * k:,.0f} s with {threads} threads "
          f"(budget: 900 s per hot loop)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--ads", type=int, default=500)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--only", choices=["meta", "google"], default=None)
    args = ap.parse_args()
    if args.only in (None, "meta"):
        meta_bench(args.accounts, args.ads, args.threads)
    if args.only in (None, "google"):
        google_bench(args.accounts, args.ads, args.threads)


if __name__ == "__main__":
    main()
