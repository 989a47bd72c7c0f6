"""Query parameters shared by the analytics routes: the currency, and the timeframe
resolved in the workspace's own zone (422 with the reason)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import HTTPException, Query

from serving import queries as q
from serving.deps import Conn, CurrentWorkspace
from serving.timeframes import Period, Timeframe, TimeframeError, local_today, resolve, utc_now

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
