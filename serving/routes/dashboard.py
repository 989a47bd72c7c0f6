"""``GET /dashboard``: everything the page needs for one timeframe, in one call (the
reads and their caches: ``serving.dashboard_service``)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Query

from schemas.api import Dashboard as DashboardOut
from schemas.api import PeriodOut, WorkspaceOut
from schemas.edge import ApiDate
from serving.alerts_queries import latest_alerts
from serving.deps import Conn, CurrentWorkspace, Dashboard
from serving.json_route import api_router
from serving.periods import Currency, today_and_period
from serving.timeframes import Timeframe, grain_for, previous

log = logging.getLogger(__name__)
router = api_router(tags=["dashboard"])


@router.get("/dashboard", response_model=DashboardOut)
def dashboard(
    service: Dashboard,
    ws: CurrentWorkspace,
    conn: Conn,
    timeframe: Annotated[Timeframe | None, Query(description="default today")] = None,
    start: Annotated[ApiDate | None, Query(alias="from", description="custom range start (report date)")] = None,
    end: Annotated[ApiDate | None, Query(alias="to", description="custom range end, inclusive")] = None,
    currency: Currency = None,
    top: Annotated[int, Query(ge=1, le=100, description="number of top campaigns")] = 10,
) -> DashboardOut:
    """KPIs with the previous equal period and the change, a series by provider (15-min
    for one day, hourly up to 7 days, daily beyond), top campaigns by spend and the spend
    mix.  Daily sums (KPIs of both periods, currencies, mix, daily series) from
    ``metrics_account_daily``, top campaigns (this period only) from
    ``metrics_campaign_daily`` (both equal to ``metrics_daily``'s sums), intraday series
    from ``metrics_account_15m`` (by hour for a week), in one currency, filtered on report dates
    in the workspace's timezone."""
    today, period = today_and_period(ws.timezone, timeframe, start, end)
    prev = previous(period)
    figures = service.figures(conn, ws.id, period, prev, today, currency, top)
    log.info("dashboard", extra={"workspace_id": str(ws.id), "start": str(period.start), "end": str(period.end),
                                 "currency": figures.currency})
    return DashboardOut(
        workspace=WorkspaceOut(id=ws.id, name=ws.name, timezone=ws.timezone, role=ws.role),  # type: ignore[arg-type]
        timeframe=timeframe or ("custom" if start else "today"),
        period=PeriodOut(start=period.start, end=period.end),
        previous_period=PeriodOut(start=prev.start, end=prev.end),
        currency=figures.currency, currencies=figures.currencies, kpis=figures.kpis, grain=grain_for(period),
        series=figures.series, top_campaigns=figures.top_campaigns, spend_mix=figures.spend_mix,
        alerts=latest_alerts(conn, ws.id),
    )
