"""The event contract refuses what it must, with reasons a human can act on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from schemas.insight import InvalidInsight, parse_insight

GOOD: dict[str, Any] = {
    "schema": "metricx.insight.v1",
    "workspace_id": "6f1c2a8e-3b1d-4c5e-9f00-0a1b2c3d4e5f",
    "provider": "meta",
    "account_id": "act_1001",
    "entity_level": "ad",
    "entity_id": "2385001",
    "campaign_id": "2384001",
    "adset_id": None,
    "report_date": "2026-11-24",
    "timezone": "America/Los_Angeles",
    "currency": "USD",
    "captured_at": "2026-11-25T07:59:00Z",
    "spend": "12.34",
    "impressions": 1234,
    "clicks": 12,
    "conversions": "3",
    "revenue": "120.50",
}


KEY = b"meta:act_1001:2385001"  # provider:account_id:entity_id of GOOD

# What the README calls wrong types: each must be refused, never coerced.  (field, value)
WRONG_TYPES: list[tuple[str, Any]] = [
    ("impressions", True), ("clicks", False), ("impressions", 100.0), ("clicks", "2"), ("impressions", "1234"),
    ("clicks", 1e1), ("report_date", 1795478400), ("report_date", "1795478400"), ("report_date", 20261124),
    ("captured_at", 1795507140), ("captured_at", "1795507140"), ("captured_at", 1795507140.5),
    ("spend", "1_000"), ("revenue", "1_2.5"), ("spend", " 12"), ("spend", "12 "), ("spend", "+1"), ("spend", ".5"),
    ("spend", "5."), ("conversions", "١٢"), ("spend", True), ("spend", None), ("spend", ["1"]), ("revenue", {"v": 1}),
    ("report_date", None), ("captured_at", True),
]


def enc(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


def test_money_as_strings_or_numbers_is_decimal_exactly() -> None:
    a = parse_insight(enc(GOOD), KEY)
    b = parse_insight(enc({**GOOD, "spend": 12.34, "revenue": 120.5, "conversions": 0.1}), KEY)
    assert a.metrics.spend == b.metrics.spend == Decimal("12.34")
    assert b.metrics.conversions == Decimal("0.1")  # not 0.1000000000000000055...
    assert a.captured_at == datetime(2026, 11, 25, 7, 59, tzinfo=UTC)


def test_offsets_are_normalised_to_utc() -> None:
    s = parse_insight(enc({**GOOD, "captured_at": "2026-11-24T23:59:00-08:00"}), KEY)
    assert s.captured_at == datetime(2026, 11, 25, 7, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (enc({**GOOD, "schema": "metricx.insight.v0"}), "schema"),
        (enc({k: v for k, v in GOOD.items() if k != "spend"}), "spend: Field required"),
        (enc({**GOOD, "impressions": "many"}), "impressions"),
        (enc({**GOOD, "spend": "-5"}), "greater than or equal to 0"),
        (enc({**GOOD, "spend": "1e300"}), "spend"),
        (enc({**GOOD, "spend": "NaN"}), "finite"),
        (enc({**GOOD, "timezone": "Mars/Olympus"}), "unknown IANA timezone"),
        (enc({**GOOD, "currency": "usd"}), "currency"),
        (enc({**GOOD, "provider": "myspace"}), "provider"),
        (enc({**GOOD, "workspace_id": "ws-1"}), "workspace_id"),
        (enc({**GOOD, "captured_at": "2026-11-25T07:59:00"}), "captured_at"),
        (enc({**GOOD, "report_date": "2026-11-26"}), "has not begun"),
        (enc({**GOOD, "report_date": "2024-01-01"}), "more than 400 days"),
        (enc({**GOOD, "clicks": 5000}), "exceed impressions"),
        (enc({**GOOD, "entity_id": "a:b"}), "entity_id"),
        (enc({**GOOD, "extra": 1}), "extra"),
        (None, "no value"),
    ],
)
def test_bad_input_is_refused_with_a_reason(value: bytes | None, fragment: str) -> None:
    with pytest.raises(InvalidInsight) as err:
        parse_insight(value, KEY)
    assert fragment in err.value.reason


def test_key_must_match_the_payload() -> None:
    parse_insight(enc(GOOD), KEY)
    with pytest.raises(InvalidInsight, match="does not match"):
        parse_insight(enc(GOOD), b"meta:act_1001:other")
    with pytest.raises(InvalidInsight, match="no key"):
        parse_insight(enc(GOOD), None)


def test_snapshots_from_the_future_are_refused() -> None:
    now = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    with pytest.raises(InvalidInsight, match="future"):
        parse_insight(enc(GOOD), KEY, now=now)


def test_round_trip_through_the_wire_form() -> None:
    s = parse_insight(enc(GOOD), KEY)
    assert parse_insight(json.dumps(s.to_event()).encode(), KEY) == s


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_wrong_types_are_refused_not_coerced(field: str, value: Any) -> None:
    with pytest.raises(InvalidInsight) as err:
        parse_insight(enc({**GOOD, field: value}), KEY)
    assert field in err.value.reason


@pytest.mark.parametrize(
    "mutation",
    [
        {"captured_at": "9999-12-31T23:59:59-23:59"},  # past the last instant Python can hold in UTC
        {"captured_at": "0001-01-01T00:00:00Z", "report_date": "0001-01-01"},  # before the first, in LA
        {"captured_at": "0001-01-01T00:00:00+23:59", "report_date": "0001-01-01"},
        {"captured_at": "9999-12-31T23:59:59Z", "report_date": "9999-12-31", "timezone": "Pacific/Kiritimati"},
    ],
)
def test_times_at_the_calendars_edges_are_refused_not_raised(mutation: dict[str, str]) -> None:
    """An OverflowError here stopped the pipeline (for every tenant) on one record."""
    with pytest.raises(InvalidInsight) as err:
        parse_insight(enc({**GOOD, **mutation}), KEY)
    assert "captured_at" in err.value.reason or "report_date" in err.value.reason


def test_a_huge_key_is_not_repeated_in_its_refusal() -> None:
    key = b"meta:act_1001:" + b"k" * 600_000
    with pytest.raises(InvalidInsight) as err:
        parse_insight(enc(GOOD), key)
    assert "does not match" in err.value.reason and len(err.value.reason) < 300


def test_refusals_of_huge_inputs_stay_short() -> None:
    """Field names are part of the input: 10,000 extra fields with 1 KB names give a
    one-line reason, not a megabyte."""
    bloated = {**GOOD, **{f"{i:04d}" + "n" * 1000: 1 for i in range(10_000)}}
    with pytest.raises(InvalidInsight) as err:
        parse_insight(enc(bloated), KEY)
    assert "Extra inputs are not permitted" in err.value.reason and len(err.value.reason) < 1000
