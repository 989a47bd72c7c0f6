"""The cost contract accepts what a merchant means and refuses, with a reason, what would
be stored wrong: too many decimals for the currency, unknown currencies, negative costs
outside refunds and credits, ranges that end before they start, coerced types."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.costs import (
    COST_IN,
    COST_OUT,
    CostList,
    MonthlyCostIn,
    OneOffCostIn,
    PercentCostIn,
    SpreadCostIn,
)
from schemas.currencies import MINOR_UNITS
from schemas.edge import first_error

BASE: dict[str, Any] = {"label": "Shipping", "category": "shipping", "currency": "USD"}
ONE_OFF = {**BASE, "kind": "one_off", "day": "2024-02-29", "amount": "12.34"}
SPREAD = {**BASE, "kind": "spread", "start": "2024-01-01", "end": "2024-12-31", "amount": "1200.00"}
MONTHLY = {**BASE, "kind": "monthly", "start": "2024-01-15", "amount": 99}
PERCENT = {**BASE, "kind": "percent", "start": "2024-01-01", "rate": "2.9", "base": "revenue", "provider": "meta"}


def amount(body: dict[str, Any]) -> Decimal:
    cost = COST_IN.validate_python(body)
    assert isinstance(cost, OneOffCostIn)
    return cost.amount


def refusal(body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as exc:
        COST_IN.validate_python(body)
    return first_error(exc.value)


def test_each_kind_is_accepted_and_reads_back_the_same_through_json() -> None:
    for body in (ONE_OFF, SPREAD, MONTHLY, PERCENT):
        cost = COST_IN.validate_python(body)
        assert cost.kind == body["kind"]
        assert COST_IN.validate_json(COST_IN.dump_json(cost)) == cost
    monthly = COST_IN.validate_python(MONTHLY)
    assert isinstance(monthly, MonthlyCostIn) and monthly.end is None and monthly.counts_as_ad_spend is False
    percent = COST_IN.validate_python({**PERCENT, "provider": None, "counts_as_ad_spend": True})
    assert isinstance(percent, PercentCostIn) and percent.provider is None and percent.counts_as_ad_spend


def test_a_range_may_start_and_end_on_the_same_day_and_span_ten_years() -> None:
    one_day = COST_IN.validate_python({**SPREAD, "start": "2024-03-31", "end": "2024-03-31"})
    assert isinstance(one_day, SpreadCostIn) and one_day.start == one_day.end
    COST_IN.validate_python({**SPREAD, "start": "2020-01-01", "end": "2029-12-31"})  # 3653 days


@pytest.mark.parametrize(("change", "reason"), [
    ({"surprise": 1}, "Extra inputs are not permitted"),
    ({"kind": "weekly"}, "does not match any of the expected tags"),
    ({"category": "marketing"}, "category: Input should be"),
    ({"currency": "usd"}, "unknown currency 'usd'"),
    ({"currency": "XXX"}, "unknown currency"),
    ({"currency": "XAU"}, "unknown currency"),
    ({"currency": "USDX" * 1000}, "unknown currency 'USDXUSDX'…"),
    ({"currency": 840}, "currency: Input should be a valid string"),
    ({"amount": "12.345"}, "amount in USD has more than 2 decimal(s)"),
    ({"currency": "JPY", "amount": "1.5"}, "amount in JPY has more than 0 decimal(s)"),
    ({"currency": "KWD", "amount": "1.0005"}, "amount in KWD has more than 3 decimal(s)"),
    ({"amount": "-5"}, "negative only for the refund and credit categories"),
    ({"amount": "0.00"}, "amount must not be zero"),
    ({"amount": "10000000000.01"}, "less than or equal to 10000000000"),
    ({"amount": "1e3"}, "no blanks, exponents"),
    ({"amount": " 12"}, "no blanks, exponents"),
    ({"amount": "NaN"}, "no blanks, exponents"),
    ({"amount": float("inf")}, "finite number"),
    ({"amount": True}, "must be a decimal number"),
    ({"amount": None}, "must be a decimal number"),
    ({"day": 1709164800}, "must be a date string YYYY-MM-DD"),
    ({"day": "2024-02-30"}, "day:"),
    ({"day": "29.02.2024"}, "must be a date string YYYY-MM-DD"),
    ({"day": "1999-12-31"}, "must be between 2000-01-01 and 2100-12-31"),
    ({"label": ""}, "label: String should have at least 1 character"),
    ({"label": "   "}, "label: String should have at least 1 character"),
    ({"label": "x" * 201}, "label: String should have at most 200 characters"),
    ({"label": "ship\x00ping"}, "found U+0000"),
    ({"label": "ship\nping"}, "found U+000A"),
    ({"label": "ship\ud800ping"}, "label: Input should be a valid string"),  # not encodable as UTF-8
    ({"label": 7}, "label: Input should be a valid string"),
    ({"counts_as_ad_spend": "yes"}, "counts_as_ad_spend: Input should be a valid boolean"),
    ({"counts_as_ad_spend": 1}, "counts_as_ad_spend: Input should be a valid boolean"),
])
def test_one_off_refusals_say_why(change: dict[str, Any], reason: str) -> None:
    assert reason in refusal({**ONE_OFF, **change})


@pytest.mark.parametrize(("body", "change", "reason"), [
    (SPREAD, {"start": "2024-05-02", "end": "2024-05-01"}, "end must be on or after start"),
    (MONTHLY, {"start": "2024-05-02", "end": "2024-05-01"}, "end must be on or after start"),
    (PERCENT, {"start": "2024-05-02", "end": "2024-05-01"}, "end must be on or after start"),
    (SPREAD, {"start": "2020-01-01", "end": "2030-01-01"}, "at most 3653 days"),
    (MONTHLY, {"start": "2020-01-01", "end": "2030-01-01"}, "at most 3653 days"),
    (SPREAD, {"end": None}, "spread.end"),
    (SPREAD, {"end": "2101-01-01"}, "must be between"),
    (MONTHLY, {"amount": "-1", "category": "tools"}, "negative only for the refund and credit"),
    (PERCENT, {"rate": "0"}, "rate must not be zero"),
    (PERCENT, {"rate": "100.0001"}, "less than or equal to 100"),
    (PERCENT, {"rate": "2.90001"}, "rate has more than 4 decimal(s)"),
    (PERCENT, {"rate": "-2"}, "negative only for the refund and credit"),
    (PERCENT, {"base": "profit"}, "percent.base"),
    (PERCENT, {"provider": "bing"}, "percent.provider"),
    (PERCENT, {"amount": "10"}, "Extra inputs are not permitted"),
    (MONTHLY, {"rate": "10"}, "Extra inputs are not permitted"),
])
def test_schedule_refusals_say_why(body: dict[str, Any], change: dict[str, Any], reason: str) -> None:
    assert reason in refusal({**body, **change})


@pytest.mark.parametrize("category", ["refund", "credit"])
def test_refunds_and_credits_may_be_negative(category: str) -> None:
    assert amount({**ONE_OFF, "category": category, "amount": "-12.34"}) == Decimal("-12.34")
    percent = COST_IN.validate_python({**PERCENT, "category": category, "rate": "-1.5"})
    assert isinstance(percent, PercentCostIn) and percent.rate == Decimal("-1.5")


def test_trailing_zeros_are_not_extra_decimals() -> None:
    assert amount({**ONE_OFF, "currency": "JPY", "amount": "1500.00"}) == 1500
    assert amount({**ONE_OFF, "currency": "KWD", "amount": "1.500"}) == Decimal("1.5")
    assert amount({**ONE_OFF, "amount": 19.99}) == Decimal("19.99")  # a JSON number


@given(currency=st.sampled_from(sorted(MINOR_UNITS)), units=st.integers(1, 10**9), sign=st.sampled_from([1, -1]))
def test_any_amount_within_the_minor_unit_is_accepted_and_one_more_decimal_is_not(
        currency: str, units: int, sign: int) -> None:
    places = MINOR_UNITS[currency]
    value = Decimal(sign * units).scaleb(-places)
    body = {**ONE_OFF, "category": "refund", "currency": currency}
    assert amount({**body, "amount": str(value)}) == value
    finer = value + Decimal(sign).scaleb(-places - 1)  # a non-zero digit one place further
    assert "decimal(s)" in refusal({**body, "amount": str(finer)})


def test_the_currency_table_knows_the_minor_units_iso_4217_gives() -> None:
    # written out from ISO 4217, not read from the table
    for code, places in {"JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "VND": 0, "XOF": 0, "USD": 2, "EUR": 2,
                         "GBP": 2, "CHF": 2, "INR": 2, "BRL": 2, "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3,
                         "TND": 3, "IQD": 3, "LYD": 3}.items():
        assert MINOR_UNITS[code] == places, code
    assert all(len(c) == 3 and c.isascii() and c.isupper() for c in MINOR_UNITS)
    assert not {"XXX", "XTS", "XAU", "XDR", "HRK", "BOV", "CLF"} & MINOR_UNITS.keys()


def test_a_stored_cost_reads_back_with_its_bookkeeping() -> None:
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    stored = {**SPREAD, "id": str(uuid.uuid4()), "created_at": now.isoformat(), "updated_at": now.isoformat(),
              "updated_by": "owner@example.com"}
    out = COST_OUT.validate_python(stored)
    assert out.kind == "spread" and out.start == date(2024, 1, 1) and out.updated_by == "owner@example.com"
    listed = CostList.model_validate_json(CostList(costs=[out]).model_dump_json())
    assert listed.costs == [out]
    assert '"amount":"1200.00"' in CostList(costs=[out]).model_dump_json()  # money as a string
