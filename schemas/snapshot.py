"""What the ``metricx.insight.v1`` contract and its fast acceptor share: the bounds,
the key, zones, and the plain :class:`Snapshot` both produce.

Its own module so that the contract (:mod:`schemas.insight`) can use the fast path
(:mod:`schemas.fastpath`) without the fast path importing the contract back: both
depend on this module, neither on the other's internals.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from schemas.metrics import Metrics

INSIGHT_SCHEMA = "metricx.insight.v1"
RAW_TOPIC = "metricx.insights.raw"

PROVIDERS = ("meta", "google", "tiktok", "sim")
ENTITY_LEVELS = ("ad", "adset", "campaign", "asset_group")

# Bounds that separate a real ad account from a broken upstream.  A single entity
# spending ten billion a day in any currency, or reporting a restatement for a day more
# than ~13 months back, is a bug upstream, not data.
MAX_MONEY = Decimal("10000000000")
MAX_COUNT = 10**13
MAX_REPORT_AGE = timedelta(days=400)
MAX_CLOCK_SKEW = timedelta(minutes=10)


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """Resolve an IANA zone once; the pipeline asks for the same few zones constantly."""
    return ZoneInfo(name)


def insight_key(provider: str, account_id: str, entity_id: str) -> str:
    """Kafka key: every snapshot of one entity lands on one partition, in order."""
    return f"{provider}:{account_id}:{entity_id}"


@dataclass(slots=True)
class Snapshot:
    """A validated cumulative snapshot, the unit the pure pipeline logic works on."""

    workspace_id: str
    provider: str
    account_id: str
    entity_level: str
    entity_id: str
    campaign_id: str
    adset_id: str | None
    report_date: date
    timezone: str
    currency: str
    captured_at: datetime
    metrics: Metrics

    @property
    def entity_key(self) -> str:
        """State key: one entity of one workspace (all its report dates)."""
        return f"{self.workspace_id}:{self.provider}:{self.account_id}:{self.entity_id}"

    def to_event(self) -> dict[str, Any]:
        """The JSON-ready wire form (money as decimal strings)."""
        m = self.metrics
        return {
            "schema": INSIGHT_SCHEMA,
            "workspace_id": self.workspace_id,
            "provider": self.provider,
            "account_id": self.account_id,
            "entity_level": self.entity_level,
            "entity_id": self.entity_id,
            "campaign_id": self.campaign_id,
            "adset_id": self.adset_id,
            "report_date": self.report_date.isoformat(),
            "timezone": self.timezone,
            "currency": self.currency,
            "captured_at": self.captured_at.astimezone(UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "spend": str(m.spend),
            "impressions": m.impressions,
            "clicks": m.clicks,
            "conversions": str(m.conversions),
            "revenue": str(m.revenue),
        }
