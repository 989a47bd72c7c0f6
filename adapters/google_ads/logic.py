"""Pure Google Ads logic: GAQL text, unit conversion, row mapping, error classification,
the daily operations budget.  No SDK import here (the poller extracts plain values from
the protobuf rows first), so every rule is unit tested without a server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from adapters.entities import Entity
from ground.settings import BASIC_DAILY_OPERATIONS
from schemas.insight import InsightV1, InvalidInsight, Snapshot

MICROS = Decimal(1_000_000)
SIX_PLACES = Decimal("0.000001")

# Explorer access: 2,880 operations/day; Basic: 15,000.  One Search/SearchStream query is
# one operation whatever its size.
EXPLORER_DAILY_OPERATIONS = 2_880

METRICS = "metrics.cost_micros, metrics.impressions, metrics.clicks, metrics.conversions, metrics.conversions_value"


def customer_query() -> str:
    return "SELECT customer.id, customer.time_zone, customer.currency_code FROM customer LIMIT 1"


def ad_query(since: date, until: date) -> str:
    """Ad-level metrics per day (``ad_group_ad``)."""
    return (
        "SELECT campaign.id, ad_group.id, ad_group_ad.ad.id, segments.date, "
        f"{METRICS} FROM ad_group_ad "
        f"WHERE segments.date BETWEEN '{since.isoformat()}' AND '{until.isoformat()}'"
    )


def asset_group_query(since: date, until: date) -> str:
    """Performance Max has no ads: its metrics come per ``asset_group``."""
    return (
        "SELECT campaign.id, asset_group.id, segments.date, "
        f"{METRICS} FROM asset_group "
        f"WHERE segments.date BETWEEN '{since.isoformat()}' AND '{until.isoformat()}'"
    )


def micros_to_money(micros: int) -> Decimal:
    """``cost_micros`` (integer, account-currency micros) -> exact currency units."""
    return Decimal(int(micros)) / MICROS


def fractional(value: float) -> Decimal:
    """A double from the API (conversions may be fractional: 1.5 under data-driven
    attribution) -> Decimal via its shortest repr, rounded to the contract's 6 places."""
    if not math.isfinite(value):
        raise InvalidInsight(f"non-finite value {value!r}")
    return Decimal(repr(float(value))).quantize(SIX_PLACES, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class GoogleRow:
    """The plain values of one GoogleAdsRow (ad or asset group, one day)."""

    level: Literal["ad", "asset_group"]
    campaign_id: int
    group_id: int  # ad group id for ads, asset group id for Performance Max
    entity_id: int  # ad id, or the asset group id again
    day: str
    cost_micros: int
    impressions: int
    clicks: int
    conversions: float
    conversions_value: float


def row_to_snapshot(
    row: GoogleRow, *, workspace_id: str, customer_id: str, timezone: str, currency: str, captured_at: datetime
) -> Snapshot:
    try:
        event: dict[str, Any] = {
            "schema": "metricx.insight.v1",
            "workspace_id": workspace_id,
            "provider": "google",
            "account_id": customer_id,
            "entity_level": row.level,
            "entity_id": str(row.entity_id),
            "campaign_id": str(row.campaign_id),
            "adset_id": str(row.group_id) if row.level == "ad" else None,
            "report_date": row.day,
            "timezone": timezone,
            "currency": currency,
            "captured_at": captured_at,
            "spend": micros_to_money(row.cost_micros),
            "impressions": row.impressions,
            "clicks": row.clicks,
            "conversions": fractional(row.conversions),
            "revenue": fractional(row.conversions_value),
        }
        return InsightV1.model_validate(event).to_snapshot()
    except ValidationError as err:
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)]
        raise InvalidInsight(f"google {row.level} row: " + "; ".join(parts)) from None


ErrorKind = Literal["reauth", "quota", "transient", "fatal"]


@dataclass(frozen=True)
class FailureInfo:
    """What the poller extracted from a GoogleAdsFailure (or a bare gRPC status)."""

    status: str  # gRPC status code name
    error_types: tuple[str, ...] = ()  # oneof names set in ErrorCode, e.g. "quota_error"
    error_values: tuple[str, ...] = ()  # enum names, e.g. "RESOURCE_EXHAUSTED"
    retry_delay_s: float | None = None
    message: str = ""


def authentication_refused(info: FailureInfo) -> bool:
    """The credentials themselves were refused (expired or revoked access token), as
    opposed to a permission missing on the customer (``authorization_error``)."""
    return "authentication_error" in info.error_types or info.status == "UNAUTHENTICATED"


def classify(info: FailureInfo) -> ErrorKind:
    if "authentication_error" in info.error_types or "authorization_error" in info.error_types:
        return "reauth"
    if info.status == "UNAUTHENTICATED":
        return "reauth"
    if "quota_error" in info.error_types or info.status == "RESOURCE_EXHAUSTED":
        return "quota"
    if info.status in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "ABORTED"):
        return "transient"
    return "fatal"


DEFAULT_QUOTA_DELAY_S = 60.0
DAILY_QUOTA_DELAY_S = 3600.0


def quota_delay(info: FailureInfo) -> float:
    """How long the circuit stays open: the server's ``retry_delay`` when given; a daily
    exhaustion (``RESOURCE_EXHAUSTED`` without a delay) waits an hour, never retried
    inside the sync."""
    if info.retry_delay_s is not None and info.retry_delay_s > 0:
        return info.retry_delay_s
    if "RESOURCE_EXHAUSTED" in info.error_values:
        return DAILY_QUOTA_DELAY_S
    return DEFAULT_QUOTA_DELAY_S


class Budget(Protocol):
    """Where operations are counted: in-process (:class:`OperationBudget`) or shared by
    every poller process (:class:`adapters.google_ads.budget.RedisOperationBudget`)."""

    daily_limit: int

    def try_spend(self, today: date, customer_id: str, n: int = 1) -> bool: ...


@dataclass
class OperationBudget:
    """Operations spent per (developer token's) day; refuse before the daily limit so a
    sync never retries into an exhausted quota."""

    daily_limit: int = BASIC_DAILY_OPERATIONS
    day: date | None = None
    used: int = 0
    per_customer: dict[str, int] = field(default_factory=dict)

    def try_spend(self, today: date, customer_id: str, n: int = 1) -> bool:
        if self.day != today:
            self.day, self.used, self.per_customer = today, 0, {}
        if self.used + n > self.daily_limit:
            return False
        self.used += n
        self.per_customer[customer_id] = self.per_customer.get(customer_id, 0) + n
        return True


def entity_queries() -> tuple[str, str]:
    """Names, statuses and hierarchy: ads (with their ad group and campaign) and
    Performance Max asset groups (with their campaign).  No segments: one row per entity."""
    return (
        "SELECT campaign.id, campaign.name, campaign.status, ad_group.id, ad_group.name, ad_group.status, "
        "ad_group_ad.ad.id, ad_group_ad.ad.name, ad_group_ad.status FROM ad_group_ad",
        "SELECT campaign.id, campaign.name, campaign.status, asset_group.id, asset_group.name, asset_group.status "
        "FROM asset_group",
    )


@dataclass(frozen=True)
class GoogleEntityRow:
    """Plain values of one entity row; ``ad_*`` are None for asset-group rows."""

    campaign: tuple[int, str, str]
    group: tuple[int, str, str]  # ad group, or asset group
    ad: tuple[int, str, str] | None


def google_entities(rows: list[GoogleEntityRow]) -> list[Entity]:
    """Campaigns, ad groups (as ``adset``), ads and asset groups, each once."""
    out: dict[str, Entity] = {}
    for r in rows:
        cid = str(r.campaign[0])
        out.setdefault(cid, Entity(cid, "campaign", r.campaign[1], r.campaign[2], cid, None))
        gid = str(r.group[0])
        if r.ad is None:
            out[gid] = Entity(gid, "asset_group", r.group[1], r.group[2], cid, None)
            continue
        out.setdefault(gid, Entity(gid, "adset", r.group[1], r.group[2], cid, gid))
        aid = str(r.ad[0])
        out[aid] = Entity(aid, "ad", r.ad[1], r.ad[2], cid, gid)
    return list(out.values())
