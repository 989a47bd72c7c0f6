"""``GET /analytics/timeseries``: one metric over time, optionally grouped and filtered."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import HTTPException, Query

from domain import kpis as k
from schemas.api import PeriodOut, Timeseries, TimeseriesGroup, TimeseriesPoint
from schemas.edge import ApiDate, Text
from serving import queries as q
from serving.deps import Conn, CurrentWorkspace
from serving.json_route import api_router
from serving.periods import Currency, period_for, pick_currency
from serving.timeframes import Grain, Timeframe, grain_for

router = api_router(tags=["analytics"])

Metric = Literal["spend", "impressions", "clicks", "conversions", "revenue", "roas", "cpa", "cpc", "ctr", "cpm"]
GroupBy = Literal["provider", "account_id", "campaign_id"]
MAX_15M_DAYS = 7
Id = Annotated[Text | None, Query(min_length=1, max_length=200)]


@router.get("/analytics/timeseries", response_model=Timeseries)
def timeseries(
    ws: CurrentWorkspace,
    conn: Conn,
    metric: Metric,
    grain: Annotated[Grain | None, Query(description="default: by range length")] = None,
    group_by: GroupBy | None = None,
    timeframe: Timeframe | None = None,
    start: Annotated[ApiDate | None, Query(alias="from")] = None,
    end: Annotated[ApiDate | None, Query(alias="to")] = None,
    currency: Currency = None,
    provider: Id = None,
    account_id: Id = None,
    campaign_id: Id = None,
) -> Timeseries:
    """Sums per bucket (and group); ratio metrics are computed per bucket from sums."""
    period = period_for(ws.timezone, timeframe, start, end)
    g: Grain = grain or grain_for(period)
    if g == "15m" and period.days > MAX_15M_DAYS:
        raise HTTPException(422, f"grain=15m allows at most {MAX_15M_DAYS} days")
    cur, _ = pick_currency(conn, ws, currency, period)
    filters = {c: v for c, v in (("provider", provider), ("account_id", account_id), ("campaign_id", campaign_id))
               if v is not None}
    groups: dict[str | None, list[TimeseriesPoint]] = {}
    if cur is not None:
        for key, bucket, s in q.series(conn, ws.id, cur, period, g, group_by, filters):
            groups.setdefault(key, []).append(TimeseriesPoint(bucket_start=bucket, value=k.kpis(s)[metric]))
    return Timeseries(
        metric=metric, grain=g, group_by=group_by, currency=cur or "", period=PeriodOut(start=period.start, end=period.end),
        groups=[TimeseriesGroup(key=key, points=pts) for key, pts in groups.items()],
    )
