"""``GET /dashboard``: everything the page needs for one timeframe, in one call."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Generic, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request

from domain import kpis as k
from schemas.api import (
    CampaignRow,
    Dashboard,
    KpiValue,
    MixRow,
    PeriodOut,
    ProviderSeries,
    SeriesPoint,
    WorkspaceOut,
)
from schemas.edge import ApiDate
from serving import campaign_totals
from serving import queries as q
from serving.alerts_queries import latest_alerts
from serving.db import ConnectionPool
from serving.deps import Conn, CurrentWorkspace
from serving.json_route import api_router
from serving.timeframes import (
    Grain,
    Period,
    Timeframe,
    TimeframeError,
    grain_for,
    local_today,
    previous,
    resolve,
    split_hot,
    utc_now,
)
from serving.versioned_cache import VersionedCache

log = logging.getLogger(__name__)
T = TypeVar("T")
ONE_DAY = timedelta(days=1)

# The dashboard's reads: the daily sums of both periods with the accounts' versions
# (account grain, a millisecond or two), every campaign's sums over the period (only the
# accounts and parts whose versions moved are read again, see serving.campaign_totals),
# and the intraday series.  The series runs on a second connection, started before the
# daily sums pick the currency: with the workspace's last answer (or the requested
# currency), redone in the rare case the pick differs.
#
# Side reads use their own small pool, and only as many run as it has connections: a
# request never waits for a side connection (with every request connection taken, it
# would wait for itself); without a free slot it reads on its own connection, in turn.
SIDE_CONNECTIONS = 4
_SIDE = ThreadPoolExecutor(max_workers=SIDE_CONNECTIONS, thread_name_prefix="dashboard-side")
_SIDE_SLOTS = threading.BoundedSemaphore(SIDE_CONNECTIONS)
_CURRENCY_HINTS: dict[uuid.UUID, str] = {}
_MAX_HINTS = 10_000


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The side reads' pool and the caches live with the app (merged into its lifespan by
    include_router)."""
    pool = ConnectionPool(app.state.settings.libpq_url, max_size=SIDE_CONNECTIONS)
    app.state.dashboard_side_pool = pool
    app.state.dashboard_figures = VersionedCache[_Figures](FIGURE_ENTRIES)
    app.state.dashboard_campaigns = campaign_totals.new_cache()
    try:
        yield
    finally:
        app.state.dashboard_side_pool = None
        app.state.dashboard_figures = None
        app.state.dashboard_campaigns = None
        pool.close()


def side_pool(request: Request) -> ConnectionPool | None:
    pool: ConnectionPool | None = getattr(request.app.state, "dashboard_side_pool", None)
    return pool


router = api_router(tags=["dashboard"], lifespan=_lifespan)


class _Read(Generic[T]):
    """One read: on a side connection when a slot is free now, else on the request's own
    connection when its result is asked for."""

    def __init__(self, pool: ConnectionPool | None, conn: Conn, fn: Callable[[Conn], T]) -> None:
        self._conn, self._fn = conn, fn
        self._future: Future[T] | None = None
        if pool is not None and _SIDE_SLOTS.acquire(blocking=False):
            def run() -> T:
                try:
                    with pool.connection() as side:
                        return fn(side)
                finally:
                    _SIDE_SLOTS.release()

            try:
                self._future = _SIDE.submit(run)
            except BaseException:
                _SIDE_SLOTS.release()
                raise

    def result(self) -> T:
        return self._future.result() if self._future is not None else self._fn(self._conn)

    def wait(self) -> None:
        if self._future is not None:
            self._future.exception()


def _series_read(pool: ConnectionPool | None, conn: Conn, ws: uuid.UUID, cur: str, period: Period,
                 grain: Grain) -> _Read[list[tuple[str | None, datetime | date, k.Sums]]] | None:
    """The intraday series (none for a daily grain: the daily sums give it)."""
    if grain == "day":
        return None
    return _Read(pool, conn, lambda c: q.series(c, ws, cur, period, grain, "provider"))


Currency = Annotated[str | None, Query(pattern=r"^[A-Z]{3}$", description="ISO 4217; default: largest spend")]


def today_and_period(ws_tz: str, timeframe: Timeframe | None, start: date | None, end: date | None
                     ) -> tuple[date, Period]:
    """The workspace's today and the request's timeframe resolved against it (one clock
    read: both agree across midnight); 422 with the reason."""
    try:
        today = local_today(utc_now(), ws_tz)
        return today, resolve(timeframe, start, end, today)
    except TimeframeError as exc:
        raise HTTPException(422, str(exc)) from None


def period_for(ws_tz: str, timeframe: Timeframe | None, start: date | None, end: date | None) -> Period:
    """Resolve the request's timeframe in the workspace's zone; 422 with the reason."""
    return today_and_period(ws_tz, timeframe, start, end)[1]


def pick_currency(conn: Conn, ws: CurrentWorkspace, wanted: str | None, *periods: Period) -> tuple[str | None, list[str]]:
    available = q.currencies(conn, ws.id, periods)
    if wanted is not None:
        return wanted, available
    return (available[0] if available else None), available


@dataclass(frozen=True, slots=True)
class _Figures:
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


@router.get("/dashboard", response_model=Dashboard)
def dashboard(
    request: Request,
    ws: CurrentWorkspace,
    conn: Conn,
    timeframe: Annotated[Timeframe | None, Query(description="default today")] = None,
    start: Annotated[ApiDate | None, Query(alias="from", description="custom range start (report date)")] = None,
    end: Annotated[ApiDate | None, Query(alias="to", description="custom range end, inclusive")] = None,
    currency: Currency = None,
    top: Annotated[int, Query(ge=1, le=100, description="number of top campaigns")] = 10,
) -> Dashboard:
    """KPIs with the previous equal period and the change, a series by provider (15-min
    for one day, hourly up to 7 days, daily beyond), top campaigns by spend and the spend
    mix.  Daily sums (KPIs of both periods, currencies, mix, daily series) from
    ``metrics_account_daily``, top campaigns (this period only) from
    ``metrics_campaign_daily`` (both equal to ``metrics_daily``'s sums), intraday series
    from ``metrics_account_15m`` (by hour for a week), in one currency, filtered on report dates
    in the workspace's timezone."""
    today, period = today_and_period(ws.timezone, timeframe, start, end)
    prev = previous(period)
    cache: VersionedCache[_Figures] | None = getattr(request.app.state, "dashboard_figures", None)
    row = conn.execute(WAL_POSITION).fetchone() if cache is not None else None
    version = row["v"] if row else None
    key = (ws.id, period, currency, top)
    figures = cache.get(key, version) if cache is not None else None
    if figures is None:
        campaigns = getattr(request.app.state, "dashboard_campaigns", None)
        figures = _figures(side_pool(request), campaigns, conn, ws.id, period, prev, today,
                           currency, top)
        if cache is not None:
            cache.put(key, version, figures)
    log.info("dashboard", extra={"workspace_id": str(ws.id), "start": str(period.start), "end": str(period.end),
                                 "currency": figures.currency})
    return Dashboard(
        workspace=WorkspaceOut(id=ws.id, name=ws.name, timezone=ws.timezone, role=ws.role),  # type: ignore[arg-type]
        timeframe=timeframe or ("custom" if start else "today"),
        period=PeriodOut(start=period.start, end=period.end),
        previous_period=PeriodOut(start=prev.start, end=prev.end),
        currency=figures.currency, currencies=figures.currencies, kpis=figures.kpis, grain=grain_for(period),
        series=figures.series, top_campaigns=figures.top_campaigns, spend_mix=figures.spend_mix,
        alerts=latest_alerts(conn, ws.id),
    )


def _figures(pool: ConnectionPool | None, campaigns: campaign_totals.Cache | None, conn: Conn, ws_id: uuid.UUID,
             period: Period, prev: Period, today: date, currency: str | None, top: int) -> _Figures:
    grain = grain_for(period)
    settled, hot = split_hot(period, today)
    guess = currency or _CURRENCY_HINTS.get(ws_id)
    series = _series_read(pool, conn, ws_id, guess, period, grain) if guess is not None else None
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
        if len(_CURRENCY_HINTS) >= _MAX_HINTS:
            _CURRENCY_HINTS.clear()
        _CURRENCY_HINTS[ws_id] = cur
    if series is not None and guess != cur:
        series.wait()  # a wrong guess: its answer is unused, its connection comes back
        series = None
    if cur is None:
        return _Figures(None, available, {}, [], [], [])
    if series is None:
        series = _series_read(pool, conn, ws_id, cur, period, grain)
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
            for name in k.KPI_NAMES}
    totals = campaign_totals.campaign_totals(
        conn, campaigns, ws_id, cur,
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
    return _Figures(cur, available, kpis, series_out, top_rows, mix)


def _point(bucket: datetime | date, s: k.Sums) -> SeriesPoint:
    return SeriesPoint(bucket_start=bucket, spend=s.spend, impressions=s.impressions, clicks=s.clicks,
                       conversions=s.conversions, revenue=s.revenue)
