"""Response models of the HTTP API (OpenAPI is generated from these).

Field names are the storage column names (``spend``, ``report_date``, ``bucket_start``,
``campaign_id`` ...) and the ratio names of ``domain.kpis``.  Money, conversions and
ratios are exact decimals serialised as strings (as in the event contract); counts are
integers; an undefined ratio or change is ``null``.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from schemas.api_rules import AlertOut


class Kpis(BaseModel):
    spend: Decimal
    impressions: int
    clicks: int
    conversions: Decimal
    revenue: Decimal
    roas: Decimal | None
    cpa: Decimal | None
    cpc: Decimal | None
    ctr: Decimal | None
    cpm: Decimal | None


class KpiValue(BaseModel):
    value: Decimal | int | None
    previous: Decimal | int | None
    change: Decimal | None = Field(description="(value - previous) / previous; null if undefined")


class PeriodOut(BaseModel):
    start: date
    end: date


class SeriesPoint(BaseModel):
    bucket_start: datetime | date
    spend: Decimal
    impressions: int
    clicks: int
    conversions: Decimal
    revenue: Decimal


class ProviderSeries(BaseModel):
    provider: str
    points: list[SeriesPoint]


class CampaignRow(Kpis):
    provider: str
    account_id: str
    campaign_id: str


class MixRow(BaseModel):
    provider: str
    spend: Decimal
    share: Decimal | None = Field(description="spend / total spend; null when total spend is 0")


class WorkspaceOut(BaseModel):
    id: uuid.UUID
    name: str
    timezone: str
    role: Literal["owner", "admin", "viewer"]


class Dashboard(BaseModel):
    workspace: WorkspaceOut
    timeframe: str
    period: PeriodOut
    previous_period: PeriodOut
    currency: str | None = Field(description="all money below is in this currency; null if no data")
    currencies: list[str] = Field(description="currencies with data in the period (pick one with ?currency=)")
    kpis: dict[str, KpiValue]
    grain: Literal["15m", "hour", "day"]
    series: list[ProviderSeries]
    top_campaigns: list[CampaignRow]
    spend_mix: list[MixRow]
    alerts: list[AlertOut] = Field(default_factory=list, description="the latest alerts of the workspace")


class Ad(BaseModel):
    entity_id: str
    entity_level: str
    name: str
    status: str | None


class AdSet(BaseModel):
    adset_id: str | None
    name: str | None
    ads: list[Ad]


class Campaign(BaseModel):
    provider: str
    account_id: str
    campaign_id: str
    name: str
    status: str | None
    adsets: list[AdSet]


class Entities(BaseModel):
    campaigns: list[Campaign]


class TimeseriesPoint(BaseModel):
    bucket_start: datetime | date
    value: Decimal | int | None


class TimeseriesGroup(BaseModel):
    key: str | None = Field(description="value of the group_by column (null when not grouped)")
    points: list[TimeseriesPoint]


class Timeseries(BaseModel):
    metric: str
    grain: Literal["15m", "hour", "day"]
    group_by: str | None
    currency: str
    period: PeriodOut
    groups: list[TimeseriesGroup]


class StreamToken(BaseModel):
    token: str
    expires_in: int
    stream_url: str
