"""Pure mapping of Meta ``act_<id>/insights`` rows (level=ad, time_increment=1) to
``metricx.insight.v1`` snapshots.  No SDK, no I/O: the poller hands in plain dicts.

Why a Pydantic model for the row: the Graph API is an external input; a row with a
malformed number must be refused with a reason (and dead-lettered), not crash the sync or
be silently skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.insight import InsightV1, InvalidInsight, Snapshot

# Views of the same purchases, in order of preference.  Meta reports several of them for
# one purchase; taking the first present (never the sum) is the only correct reading.
PURCHASE_TYPES: tuple[str, ...] = ("omni_purchase", "purchase")

INSIGHT_FIELDS: tuple[str, ...] = (
    "account_id",
    "campaign_id",
    "adset_id",
    "ad_id",
    "date_start",
    "date_stop",
    "spend",
    "impressions",
    "clicks",
    "actions",
    "action_values",
)


class ActionStat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    action_type: str
    value: Decimal = Field(allow_inf_nan=False)


class MetaInsightRow(BaseModel):
    """One ad-day row as the Graph API returns it (numbers as decimal strings)."""

    model_config = ConfigDict(extra="ignore")

    campaign_id: str
    adset_id: str
    ad_id: str
    date_start: date
    date_stop: date
    spend: Decimal = Field(default=Decimal(0), allow_inf_nan=False)
    impressions: int = 0
    clicks: int = 0
    actions: list[ActionStat] | None = None
    action_values: list[ActionStat] | None = None


def pick_purchase(stats: Sequence[ActionStat] | None) -> tuple[str | None, Decimal]:
    """The purchase action type to use and its value: ``omni_purchase``, else
    ``purchase``, else none (0).  Never a sum of the overlapping types."""
    by_type = {s.action_type: s.value for s in stats or ()}
    for t in PURCHASE_TYPES:
        if t in by_type:
            return t, by_type[t]
    return None, Decimal(0)


def revenue_for(action_type: str | None, values: Sequence[ActionStat] | None) -> Decimal:
    """Revenue from ``action_values`` of the *same* action type as the conversions, so
    conversions and revenue always describe the same purchases."""
    if action_type is None:
        # No purchases counted; a value without a count would make AOV meaningless,
        # but revenue is still money the platform attributes: take the same preference.
        _, v = pick_purchase(values)
        return v
    for s in values or ():
        if s.action_type == action_type:
            return s.value
    return Decimal(0)


def row_to_snapshot(
    raw: dict[str, Any],
    *,
    workspace_id: str,
    account_id: str,
    timezone: str,
    currency: str,
    captured_at: datetime,
) -> Snapshot:
    """Map one raw row; raise :class:`InvalidInsight` with a readable reason when the row
    (or the snapshot it makes) breaks the platform shape or our contract."""
    try:
        row = MetaInsightRow.model_validate(raw)
    except ValidationError as err:
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)]
        raise InvalidInsight("meta insights row: " + "; ".join(parts)) from None
    if row.date_start != row.date_stop:
        raise InvalidInsight(f"meta insights row spans {row.date_start}..{row.date_stop}; expected one day")
    ptype, conversions = pick_purchase(row.actions)
    revenue = revenue_for(ptype, row.action_values)
    event = {
        "schema": "metricx.insight.v1",
        "workspace_id": workspace_id,
        "provider": "meta",
        "account_id": account_id,
        "entity_level": "ad",
        "entity_id": row.ad_id,
        "campaign_id": row.campaign_id,
        "adset_id": row.adset_id,
        "report_date": row.date_start,
        "timezone": timezone,
        "currency": currency,
        "captured_at": captured_at,
        "spend": row.spend,
        "impressions": row.impressions,
        "clicks": row.clicks,
        "conversions": conversions,
        "revenue": revenue,
    }
    try:
        return InsightV1.model_validate(event).to_snapshot()
    except ValidationError as err:
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)]
        raise InvalidInsight("meta insights row: " + "; ".join(parts)) from None
