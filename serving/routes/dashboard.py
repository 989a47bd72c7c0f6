"""``GET /dashboard``: everything the page needs for one timeframe, in one call."""

from __future__ import annotations

import logging
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from pipelines import kpis as k
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
from serving import queries as q
from serving.alerts_queries import latest_alerts
from serving.deps import Conn, CurrentWorkspace
from serving.timeframes import (
    Period,
    Timeframe,
    TimeframeError,
    grain_for,
    local_today,
    previous,
    resolve,
    utc_now,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["dashboard"])

Currency = Annotated[str | None, Query(pattern=r"^[A-Z]{3}$", description="ISO 4217; default: largest spend")]


def period_for(ws_tz: str, timeframe: Timeframe | None, start: date | None, end: date | None) -> Period:
    """Resolve the request's timeframe in the workspace's zone; 422 with the reason."""
    try:
        return resolve(timeframe, start, end, local_today(utc_now(), ws_tz))
    except TimeframeError as exc:
        raise HTTPException(422, str(exc)) from None


def pick_currency(conn: Conn, ws: CurrentWorkspace, wanted: str | None, *periods: Period) -> tuple[str | None, list[str]]:
    available = q.currencies(conn, ws.id, periods)
    if wanted is not None:
        return wanted, available
    return (available[0] if available else None), available


@router.get("/dashboard", response_model=Dashboard)
def dashboard(
    ws: CurrentWorkspace,
    conn: Conn,
    timeframe: Annotated[Timeframe | None, Query(description="default today")] = None,
    start: Annotated[date | None, Query(alias="from", description="custom range start (report date)")] = None,
    end: Annotated[date | None, Query(alias="to", description="custom range end, inclusive")] = None,
    currency: Currency = None,
    top: Annotated[int, Query(ge=1, le=100, description="number of top campaigns")] = 10,
) -> Dashboard:
    """KPIs with the previous equal period and the change, a series by provider (15-min
    for one day, hourly up to 7 days, daily beyond), top campaigns by spend and the spend
    mix.  All from ``metrics_daily`` / ``metrics_15m`` / ``metrics_hourly`` in one
    currency, filtered on report dates in the workspace's timezone."""
    period = period_for(ws.timezone, timeframe, start, end)
    prev = previous(period)
    grain = grain_for(period)
    # One scan for both periods; everything but the intraday series and the top
    # campaigns is summed from it (exact decimal sums, ratios after aggregation).
    daily = q.daily_by_provider(conn, ws.id, prev.start, period.end)
    spend_by_cur: dict[str, Decimal] = {}
    for c, _, _, s in daily:
        spend_by_cur[c] = spend_by_cur.get(c, Decimal(0)) + s.spend
    available = sorted(spend_by_cur, key=lambda c: (-spend_by_cur[c], c))
    cur = currency if currency is not None else (available[0] if available else None)
    kpis: dict[str, KpiValue] = {}
    series: list[ProviderSeries] = []
    top_rows: list[CampaignRow] = []
    mix: list[MixRow] = []
    if cur is not None:
        now_s, prev_s, by_prov = k.Sums(), k.Sums(), dict[str, k.Sums]()
        day_points: dict[str, list[tuple[date, k.Sums]]] = {}
        for c, provider, day, s in sorted(daily, key=lambda r: (r[1], r[2])):
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
        points: dict[str, list[tuple[datetime | date, k.Sums]]] = {}
        if grain == "day":
            points = {p: list(v) for p, v in day_points.items()}
        else:
            for key, bucket, s in q.series(conn, ws.id, cur, period, grain, "provider"):
                points.setdefault(str(key), []).append((bucket, s))
        series = [ProviderSeries(provider=p, points=[_point(b, s) for b, s in pts]) for p, pts in points.items()]
        top_rows = [
            CampaignRow(provider=p, account_id=a, campaign_id=c, **k.kpis(s))  # type: ignore[arg-type]
            for p, a, c, s in q.top_campaigns(conn, ws.id, cur, period, top)
        ]
        mix = [MixRow(provider=p, spend=s.spend, share=k.ratio(s.spend, now_s.spend))
               for p, s in sorted(by_prov.items(), key=lambda x: (-x[1].spend, x[0]))]
    log.info("dashboard", extra={"workspace_id": str(ws.id), "start": str(period.start), "end": str(period.end),
                                 "currency": cur})
    return Dashboard(
        workspace=WorkspaceOut(id=ws.id, name=ws.name, timezone=ws.timezone, role=ws.role),  # type: ignore[arg-type]
        timeframe=timeframe or ("custom" if start else "today"),
        period=PeriodOut(start=period.start, end=period.end),
        previous_period=PeriodOut(start=prev.start, end=prev.end),
        currency=cur, currencies=available, kpis=kpis, grain=grain, series=series,
        top_campaigns=top_rows, spend_mix=mix, alerts=latest_alerts(conn, ws.id),
    )



def _point(bucket: datetime | date, s: k.Sums) -> SeriesPoint:
    return SeriesPoint(bucket_start=bucket, spend=s.spend, impressions=s.impressions, clicks=s.clicks,
                       conversions=s.conversions, revenue=s.revenue)
