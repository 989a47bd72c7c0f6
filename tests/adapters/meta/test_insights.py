"""Pure mapping of Meta insights rows: purchases never summed, decimals exact, bad rows refused."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapters.meta.insights import ActionStat, pick_purchase, revenue_for, row_to_snapshot
from schemas.insight import InvalidInsight

WS = "7b0c5a0e-8a51-4d43-9a52-3c5f2f0e7a10"
NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "account_id": "111",
        "campaign_id": "c1",
        "adset_id": "s1",
        "ad_id": "a1",
        "date_start": "2026-11-25",
        "date_stop": "2026-11-25",
        "spend": "12.34",
        "impressions": "1000",
        "clicks": "17",
        "actions": [
            {"action_type": "link_click", "value": "17"},
            {"action_type": "offsite_conversion.fb_pixel_purchase", "value": "3"},
            {"action_type": "purchase", "value": "3"},
            {"action_type": "omni_purchase", "value": "3"},
        ],
        "action_values": [
            {"action_type": "offsite_conversion.fb_pixel_purchase", "value": "150.10"},
            {"action_type": "purchase", "value": "150.10"},
            {"action_type": "omni_purchase", "value": "150.10"},
        ],
    }
    base.update(over)
    return base


def snap(raw: dict[str, Any]):  # type: ignore[no-untyped-def]
    return row_to_snapshot(raw, workspace_id=WS, account_id="111", timezone="America/New_York", currency="USD", captured_at=NOW)


def test_overlapping_purchase_views_count_once() -> None:
    s = snap(row())
    assert s.metrics.conversions == Decimal("3")
    assert s.metrics.revenue == Decimal("150.10")


def test_purchase_used_when_omni_absent_and_revenue_from_same_type() -> None:
    r = row(
        actions=[{"action_type": "purchase", "value": "2"}, {"action_type": "onsite_web_purchase", "value": "5"}],
        action_values=[{"action_type": "purchase", "value": "80"}, {"action_type": "onsite_web_purchase", "value": "999"}],
    )
    s = snap(r)
    assert (s.metrics.conversions, s.metrics.revenue) == (Decimal(2), Decimal(80))


def test_no_purchase_types_gives_zero() -> None:
    s = snap(row(actions=[{"action_type": "link_click", "value": "17"}], action_values=None))
    assert (s.metrics.conversions, s.metrics.revenue) == (Decimal(0), Decimal(0))


def test_decimal_strings_are_exact_and_ids_keyed() -> None:
    s = snap(row(spend="0.10"))
    assert s.metrics.spend == Decimal("0.10") and isinstance(s.metrics.spend, Decimal)
    assert (s.provider, s.account_id, s.entity_id, s.campaign_id, s.adset_id) == ("meta", "111", "a1", "c1", "s1")
    assert (s.report_date, s.timezone, s.currency, s.entity_level) == (date(2026, 11, 25), "America/New_York", "USD", "ad")
    assert (s.metrics.impressions, s.metrics.clicks) == (1000, 17)


def test_pick_purchase_prefers_omni() -> None:
    stats = [ActionStat(action_type="purchase", value=Decimal(4)), ActionStat(action_type="omni_purchase", value=Decimal(5))]
    assert pick_purchase(stats) == ("omni_purchase", Decimal(5))
    assert revenue_for("omni_purchase", [ActionStat(action_type="purchase", value=Decimal(1))]) == Decimal(0)


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"spend": "12,34"}, "spend"),
        ({"impressions": "lots"}, "impressions"),
        ({"ad_id": None}, "ad_id"),
        ({"date_stop": "2026-11-26"}, "spans"),
        ({"spend": "-1"}, "spend"),
        ({"clicks": "5000"}, "clicks"),
        ({"date_start": "2026-11-27", "date_stop": "2026-11-27"}, "report_date"),
        ({"actions": [{"action_type": "purchase", "value": "NaN"}]}, "actions"),
    ],
)
def test_bad_rows_are_refused_with_reason(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidInsight) as exc:
        snap(row(**over))
    assert needle in exc.value.reason
