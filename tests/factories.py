"""Small builders for test data (plain values, no logic under test)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from schemas.insight import Snapshot
from schemas.metrics import Metrics

WS = "6f1c2a8e-3b1d-4c5e-9f00-0a1b2c3d4e5f"


def metrics(spend: str = "0", impressions: int = 0, clicks: int = 0, conversions: str = "0",
            revenue: str = "0") -> Metrics:
    return Metrics(Decimal(spend), impressions, clicks, Decimal(conversions), Decimal(revenue))


def snap(captured_at: datetime, report_date: date, m: Metrics, *, entity: str = "ad-1",
         tz: str = "UTC", workspace: str = WS, account: str = "act-1") -> Snapshot:
    return Snapshot(
        workspace_id=workspace, provider="sim", account_id=account, entity_level="ad",
        entity_id=entity, campaign_id="cmp-1", adset_id="set-1", report_date=report_date,
        timezone=tz, currency="USD", captured_at=captured_at, metrics=m,
    )
