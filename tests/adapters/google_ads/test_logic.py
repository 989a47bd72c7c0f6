"""Pure Google Ads rules: micros, fractional conversions, mapping, error classes, budget."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from adapters.google_ads.logic import (
    DAILY_QUOTA_DELAY_S,
    FailureInfo,
    GoogleRow,
    OperationBudget,
    ad_query,
    classify,
    fractional,
    micros_to_money,
    quota_delay,
    row_to_snapshot,
)
from schemas.insight import InvalidInsight

WS = "7b0c5a0e-8a51-4d43-9a52-3c5f2f0e7a10"
NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def test_micros_are_exact_currency_units() -> None:
    assert micros_to_money(1_234_567) == Decimal("1.234567")
    assert micros_to_money(0) == 0
    assert micros_to_money(10_000_000_000) == Decimal(10_000)


def test_fractional_conversions_kept_to_six_places() -> None:
    assert fractional(1.5) == Decimal("1.5")
    assert fractional(0.1) == Decimal("0.1")  # not 0.1000000000000000055...
    assert fractional(2 / 3) == Decimal("0.666667")
    with pytest.raises(InvalidInsight):
        fractional(float("nan"))


def test_ad_and_pmax_rows_map_to_levels() -> None:
    ad = GoogleRow("ad", 11, 22, 33, "2026-11-25", 2_500_000, 100, 7, 1.25, 40.5)
    s = row_to_snapshot(ad, workspace_id=WS, customer_id="123", timezone="Europe/Berlin", currency="EUR", captured_at=NOW)
    assert (s.provider, s.entity_level, s.entity_id, s.campaign_id, s.adset_id) == ("google", "ad", "33", "11", "22")
    assert (s.metrics.spend, s.metrics.conversions, s.metrics.revenue) == (Decimal("2.5"), Decimal("1.25"), Decimal("40.5"))
    assert (s.report_date, s.timezone, s.currency) == (date(2026, 11, 25), "Europe/Berlin", "EUR")
    pm = GoogleRow("asset_group", 11, 44, 44, "2026-11-25", 1, 1, 0, 0.0, 0.0)
    s2 = row_to_snapshot(pm, workspace_id=WS, customer_id="123", timezone="Europe/Berlin", currency="EUR", captured_at=NOW)
    assert (s2.entity_level, s2.entity_id, s2.adset_id, s2.metrics.spend) == ("asset_group", "44", None, Decimal("0.000001"))


def test_bad_rows_refused_with_reason() -> None:
    bad = GoogleRow("ad", 11, 22, 33, "2026-11-25", -5, 100, 7, 1.0, 1.0)
    with pytest.raises(InvalidInsight, match="spend"):
        row_to_snapshot(bad, workspace_id=WS, customer_id="123", timezone="Europe/Berlin", currency="EUR", captured_at=NOW)
    future = GoogleRow("ad", 11, 22, 33, "2026-11-27", 5, 100, 7, 1.0, 1.0)
    with pytest.raises(InvalidInsight, match="report_date"):
        row_to_snapshot(future, workspace_id=WS, customer_id="123", timezone="Europe/Berlin", currency="EUR", captured_at=NOW)


def test_query_is_date_bounded_and_reads_ad_group_ad() -> None:
    q = ad_query(date(2026, 10, 27), date(2026, 11, 25))
    assert "FROM ad_group_ad" in q and "BETWEEN '2026-10-27' AND '2026-11-25'" in q and "metrics.cost_micros" in q


@pytest.mark.parametrize(("info", "kind"), [
    (FailureInfo("UNAUTHENTICATED", ("authentication_error",)), "reauth"),
    (FailureInfo("PERMISSION_DENIED", ("authorization_error",)), "reauth"),
    (FailureInfo("RESOURCE_EXHAUSTED", ("quota_error",)), "quota"),
    (FailureInfo("RESOURCE_EXHAUSTED"), "quota"),
    (FailureInfo("UNAVAILABLE"), "transient"),
    (FailureInfo("INVALID_ARGUMENT", ("query_error",)), "fatal"),
])
def test_classify(info: FailureInfo, kind: str) -> None:
    assert classify(info) == kind


def test_quota_delay_honours_retry_delay_and_daily_exhaustion() -> None:
    assert quota_delay(FailureInfo("RESOURCE_EXHAUSTED", ("quota_error",), ("RESOURCE_TEMPORARILY_EXHAUSTED",), 42.0)) == 42.0
    assert quota_delay(FailureInfo("RESOURCE_EXHAUSTED", ("quota_error",), ("RESOURCE_EXHAUSTED",))) == DAILY_QUOTA_DELAY_S


def test_operation_budget_counts_per_day_and_refuses_when_spent() -> None:
    b = OperationBudget(daily_limit=3)
    d1, d2 = date(2026, 11, 25), date(2026, 11, 26)
    assert [b.try_spend(d1, "a"), b.try_spend(d1, "b"), b.try_spend(d1, "a"), b.try_spend(d1, "a")] == [True, True, True, False]
    assert b.per_customer == {"a": 2, "b": 1} and b.used == 3
    assert b.try_spend(d2, "a") and b.used == 1


def test_google_entities_dedupe_hierarchy() -> None:
    from adapters.google_ads.logic import GoogleEntityRow, google_entities

    rows = [GoogleEntityRow((1, "C", "ENABLED"), (2, "G", "ENABLED"), (3, "A", "PAUSED")),
            GoogleEntityRow((1, "C", "ENABLED"), (2, "G", "ENABLED"), (4, "B", "ENABLED")),
            GoogleEntityRow((1, "C", "ENABLED"), (9, "PM", "ENABLED"), None)]
    got = {(e.entity_id, e.entity_level, e.campaign_id, e.adset_id, e.status) for e in google_entities(rows)}
    assert got == {("1", "campaign", "1", None, "ENABLED"), ("2", "adset", "1", "2", "ENABLED"),
                   ("3", "ad", "1", "2", "PAUSED"), ("4", "ad", "1", "2", "ENABLED"),
                   ("9", "asset_group", "1", None, "ENABLED")}
