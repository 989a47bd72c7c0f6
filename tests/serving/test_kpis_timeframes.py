"""Pure logic: ratio math and timeframes (expected values worked out by hand)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from domain.kpis import Sums, change, kpis, ratio
from serving.stream import coalesce, id_key
from serving.timeframes import Period, TimeframeError, grain_for, local_today, previous, resolve

D = Decimal


def test_ratios_from_sums_with_zero_denominators_null() -> None:
    k = kpis(Sums(D("50"), 20000, 400, D("4"), D("125")))
    assert k["roas"] == D("2.5")
    assert k["cpa"] == D("12.5")
    assert k["cpc"] == D("0.125")
    assert k["ctr"] == D("0.02")
    assert k["cpm"] == D("2.5")
    zero = kpis(Sums())
    assert [zero[r] for r in ("roas", "cpa", "cpc", "ctr", "cpm")] == [None] * 5
    assert zero["spend"] == 0  # sums are 0, never null


def test_ratio_of_sums_is_not_mean_of_ratios() -> None:
    # two ads: ROAS 1.0 on 100 spend and ROAS 10 on 1 spend -> overall 110/101
    total = Sums(D("100"), 0, 0, D("0"), D("100")) + Sums(D("1"), 0, 0, D("0"), D("10"))
    assert kpis(total)["roas"] == D("1.089109")


def test_rounding_half_away_from_zero_like_postgres() -> None:
    assert ratio(D("1"), D("8"), 1) == D("0.125000")
    assert ratio(D("0.0000005"), D("1")) == D("0.000001")
    assert ratio(D("-0.0000005"), D("1")) == D("-0.000001")
    assert ratio(2, 3) == D("0.666667")


def test_change() -> None:
    assert change(D("150"), D("100")) == D("0.5")
    assert change(D("50"), D("100")) == D("-0.5")
    assert change(D("5"), D("0")) is None
    assert change(None, D("3")) is None
    assert change(D("3"), None) is None


TODAY = date(2026, 3, 29)


@pytest.mark.parametrize(("tf", "start", "end"), [
    ("today", date(2026, 3, 29), date(2026, 3, 29)),
    (None, date(2026, 3, 29), date(2026, 3, 29)),
    ("yesterday", date(2026, 3, 28), date(2026, 3, 28)),
    ("last_7_days", date(2026, 3, 23), date(2026, 3, 29)),
    ("last_30_days", date(2026, 2, 28), date(2026, 3, 29)),
])
def test_named_timeframes(tf: str | None, start: date, end: date) -> None:
    assert resolve(tf, None, None, TODAY) == Period(start, end)  # type: ignore[arg-type]


def test_custom_range_and_errors() -> None:
    assert resolve(None, date(2026, 1, 1), date(2026, 1, 31), TODAY) == Period(date(2026, 1, 1), date(2026, 1, 31))
    assert resolve("custom", date(2026, 1, 1), date(2026, 1, 1), TODAY).days == 1
    for args in [(None, date(2026, 1, 2), date(2026, 1, 1)), (None, date(2026, 1, 2), None),
                 ("today", date(2026, 1, 1), date(2026, 1, 2)), ("custom", None, None),
                 (None, date(2024, 1, 1), date(2026, 1, 1))]:
        with pytest.raises(TimeframeError):
            resolve(args[0], args[1], args[2], TODAY)  # type: ignore[arg-type]


def test_previous_period_and_grain() -> None:
    assert previous(Period(date(2026, 3, 29), date(2026, 3, 29))) == Period(date(2026, 3, 28), date(2026, 3, 28))
    assert previous(Period(date(2026, 3, 1), date(2026, 3, 7))) == Period(date(2026, 2, 22), date(2026, 2, 28))
    assert [grain_for(Period(date(2026, 3, 1), date(2026, 3, d))) for d in (1, 2, 7, 8, 31)] == \
        ["15m", "hour", "hour", "day", "day"]


def test_local_today_in_workspace_zone() -> None:
    instant = datetime(2026, 3, 29, 20, 30, tzinfo=UTC)
    assert local_today(instant, "UTC") == date(2026, 3, 29)
    assert local_today(instant, "Asia/Kathmandu") == date(2026, 3, 30)  # +5:45 -> 02:15 next day
    assert local_today(datetime(2026, 3, 29, 3, 0, tzinfo=UTC), "America/Los_Angeles") == date(2026, 3, 28)
    with pytest.raises(TimeframeError):
        local_today(instant, "Mars/Olympus")


def test_coalesce_sums_changes_per_bucket() -> None:
    ch = {"provider": "meta", "account_id": "a", "currency": "USD", "report_date": "2026-03-29",
          "bucket_start": "2026-03-29T10:00:00Z"}
    e1 = ("1-0", {"committed_at": "t1", "changes": [{**ch, "spend": "1.10", "impressions": 10, "clicks": 1,
                                                        "conversions": "0", "revenue": "0"}]})
    e2 = ("2-0", {"committed_at": "t2", "changes": [{**ch, "spend": "-0.10", "impressions": 5, "clicks": 0,
                                                        "conversions": "1", "revenue": "20.5"},
                                                       {**ch, "bucket_start": "2026-03-29T10:15:00Z", "spend": "2",
                                                        "impressions": 1, "clicks": 1, "conversions": "0",
                                                        "revenue": "0"}]})
    out = coalesce([e1, e2])
    assert out["entries"] == 2 and out["committed_at"] == "t2"
    first = out["changes"][0]
    assert (D(first["spend"]), first["impressions"], first["clicks"], D(first["conversions"]), D(first["revenue"])) \
        == (D("1.00"), 15, 1, D("1"), D("20.5"))
    assert len(out["changes"]) == 2
    assert id_key("10-2") > id_key("9-99") and id_key("10-10") > id_key("10-9")
