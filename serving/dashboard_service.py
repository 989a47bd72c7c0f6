"""The dashboard's reads and what they keep between requests, owned by the app.

A :class:`DashboardService` is built by ``serving.app.create_app`` and started and
closed by the app's lifespan (nothing is created at import): its side-read pool and
threads, the whole-answer cache, the campaign totals cache and the workspaces' currency
hints.  ``GET /dashboard`` asks it for the figures of a period.

The dashboard's reads: the daily sums of both periods with the accounts' versions
(account grain, a millisecond or two), every campaign's sums over the period (only the
accounts and parts whose versions moved are read again, see serving.campaign_totals),
and the intraday series.  The series runs on a second connection, started before the
daily sums pick the currency: with the workspace's last answer (or the requested
currency), redone in the rare case the pick differs.

Side reads use their own small pool, and only as many run as it has connections: a
request never waits for a side connection (with every request connection taken, it
would wait for itself); without a free slot it reads on its own connection, in turn.
Before the lifespan starts the service (a test client used without ``with``) every read
is on the request's connection and nothing is cached.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

import psycopg

from domain import kpis as k
from schemas.api import CampaignRow, KpiValue, MixRow, ProviderSeries, SeriesPoint
from schemas.measures import KPI_NAMES
from serving import campaign_totals
from serving import queries as q
from serving.db import ConnectionPool
from serving.timeframes import Grain, Period, grain_for, split_hot
from serving.versioned_cache import VersionedCache

T = TypeVar("T")
Conn = psycopg.Connection[dict[str, Any]]
ONE_DAY = timedelta(days=1)
SIDE_CONNECTIONS = 4
MAX_HINTS = 10_000


@dataclass(frozen=True, slots=True)
class Figures:
    """Everything of a dashboard answer that comes from the metric tables."""

    currency: str | None
    currencies: list[str]
    kpis: dict[str, KpiValue]
    series: list[ProviderSeries]
    top_campaigns: list[CampaignRow]
    spend_mix: list[MixRow]


# Whole answers, valid while the database's WAL insert position has not moved: every
# committed change writes WAL, so an unchanged position read *before* the figures'
# queries proves nothing committed since they were computed.  Any write anywhere in the
# cluster invalidates: this saves repeated work (several viewers, reloads between
# commits).  On a standby (no insert position) nothing is cached.
FIGURE_ENTRIES = 512
WAL_POSITION = "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn()::text END AS v"


class DashboardService:
    def __init__(self, libpq_url: str, *, side_connections: int = SIDE_CONNECTIONS) -> None:
        self._url = libpq_url
        self.side_connections = side_connections
        self.slots = threading.BoundedSemaphore(side_connections)
        self._hints: dict[uuid.UUID, str] = {}
        self._pool: ConnectionPool | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.figures_cache: VersionedCache[Figures] | None = None
        self.campaigns: campaign_totals.Cache | None = None

    def start(self) -> None:
        self._pool = ConnectionPool(self._url, max_size=self.side_connections)
        self._executor = ThreadPoolExecutor(max_workers=self.side_connections, thread_name_prefix="dashboard-side")
        self.figures_cache = VersionedCache[Figures](FIGURE_ENTRIES)
        self.campaigns = campaign_totals.new_cache()

    def close(self) -> None:
        pool, executor = self._pool, self._executor
        self._pool = self._executor = None
        self.figures_cache = self.campaigns = None
        if executor is not None:
            executor.shutdown(wait=True)
        if pool is not None:
            pool.close()

    def figures(self, conn: Conn, ws_id: uuid.UUID, period: Period, prev: Period, today: date,
                currency: str | None, top: int) -> Figures:
        """The period's figures, from the cache while the database has not moved."""
        cache = self.figures_cache
        row = conn.execute(WAL_POSITION).fetchone() if cache is not None else None
        version = row["v"] if row else None
        key = (ws_id, period, currency, top)
        figures = cache.get(key, version) if cache is not None else None
        if figures is None:
            figures = _compute(self, conn, ws_id, period, prev, today, currency, top)
            if cache is not None:
                cache.put(key, version, figures)
        return figures

    def _hint(self, ws_id: uuid.UUID) -> str | None:
        return self._hints.get(ws_id)

    def _remember(self, ws_id: uuid.UUID, currency: str) -> None:
        if len(self._hints) >= MAX_HINTS:
            self._hints.clear()
        self._hints[ws_id] = currency

class _Read(Generic[T]):
    """One read: on a side connection when a slot is free now, else on the request's own
    connection when its result is asked for."""

    def __init__(self, service: DashboardService, conn: Conn, fn: Callable[[Conn], T]) -> None:
        self._conn, self._fn = conn, fn
        self._future: Future[T] | None = None
        pool, executor, slots = service._pool, service._executor, service.slots
        if pool is not None and executor is not None and slots.acquire(blocking=False):
            def run() -> T:
                try:
                    with pool.connection() as side:
                        return fn(side)
                finally:
                    slots.release()

            try:
                self._future = executor.submit(run)
            except BaseException:
                slots.release()
                raise

    def result(self) -> T:
        return self._future.result() if self._future is not None else self._fn(self._conn)

    def wait(self) -> None:
        if self._future is not None:
            self._future.exception()


def _compute(service: DashboardService, conn: Conn, ws_id: uuid.UUID, period: Period, prev: Period, today: date,
             currency: str | None, top: int) -> Figures:
    grain = grain_for(period)
    settled, hot = split_hot(period, today)
    guess = currency or service._hint(ws_id)
    series = _series_read(service, conn, ws_id, guess, period, grain) if guess is not None else None
    # Both periods' daily sums in one read (the previous period ends the day before this
    # one starts); everything but the intraday series and the top campaigns is summed
    # from them (exact decimal sums, ratios after aggregation).
    daily = q.daily_by_provider(conn, ws_id, prev.start, period.start, hot.start if hot else period.end + ONE_DAY,
                                period.end)
    spend_by_cur: dict[str, Decimal] = {}
    for c, _, _, s in daily.rows:
        spend_by_cur[c] = spend_by_cur.get(c, Decimal(0)) + s.spend
    available = sorted(spend_by_cur, key=lambda c: (-spend_by_cur[c], c))
    cur = currency if currency is not None else (available[0] if available else None)
    if cur is not None and currency is None:
        service._remember(ws_id, cur)
    if series is not None and guess != cur:
        series.wait()  # a wrong guess: its answer is unused, its connection comes back
        series = None
    if cur is None:
        return Figures(None, available, {}, [], [], [])
    if series is None:
        series = _series_read(service, conn, ws_id, cur, period, grain)
    now_s, prev_s, by_prov = k.Sums(), k.Sums(), dict[str, k.Sums]()
    day_points: dict[str, list[tuple[date, k.Sums]]] = {}
    for c, provider, day, s in sorted(daily.rows, key=lambda r: (r[1], r[2])):
        if c != cur:
            continue
        if day >= period.start:
            now_s += s
            by_prov[provider] = by_prov.get(provider, k.Sums()) + s
            day_points.setdefault(provider, []).append((day, s))
        else:
            prev_s += s
    now_k, prev_k = k.kpis(now_s), k.kpis(prev_s)
    kpis = {name: KpiValue(value=now_k[name], previous=prev_k[name], change=k.change(now_k[name], prev_k[name]))
            for name in KPI_NAMES}
    totals = campaign_totals.campaign_totals(
        conn, service.campaigns, ws_id, cur,
        [(days, daily.accounts(cur, part)) for days, part in ((settled, q.SETTLED), (hot, q.HOT)) if days])
    top_rows = [
        CampaignRow(provider=p, account_id=a, campaign_id=c, **k.kpis(s))  # type: ignore[arg-type]
        for (p, a, c), s in k.top_by_spend(totals, top)
    ]
    points: dict[str, list[tuple[datetime | date, k.Sums]]] = {}
    if series is None:
        points = {p: list(v) for p, v in day_points.items()}
    else:
        for key, bucket, s in series.result():
            points.setdefault(str(key), []).append((bucket, s))
    series_out = [ProviderSeries(provider=p, points=[_point(b, s) for b, s in pts]) for p, pts in points.items()]
    mix = [MixRow(provider=p, spend=s.spend, share=k.ratio(s.spend, now_s.spend))
           for p, s in sorted(by_prov.items(), key=lambda x: (-x[1].spend, x[0]))]
    return Figures(cur, available, kpis, series_out, top_rows, mix)


def _point(bucket: datetime | date, s: k.Sums) -> SeriesPoint:
    return SeriesPoint(bucket_start=bucket, spend=s.spend, impressions=s.impressions, clicks=s.clicks,
                       conversions=s.conversions, revenue=s.revenue)


def _series_read(service: DashboardService, conn: Conn, ws: uuid.UUID, cur: str, period: Period,
                 grain: Grain) -> _Read[list[tuple[str | None, datetime | date, k.Sums]]] | None:
    """The intraday series (none for a daily grain: the daily sums give it)."""
    if grain == "day":
        return None
    return _Read(service, conn, lambda c: q.series(c, ws, cur, period, grain, "provider"))
