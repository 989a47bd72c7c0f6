"""The API's shared edge policies (``schemas.edge``): NUL-free text, one date range,
one JSON-number policy — and that every text field of the API's input models refuses
a NUL, found by walking full example bodies (so a new field cannot slip past)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.api_rules import ChannelIn
from schemas.edge import MAX_DATE, MIN_DATE, ApiDate, ApiDateTime, Text, loads_json
from schemas.rules import RuleIn

FULL_RULE: dict[str, Any] = {
    "name": "Burn without sales",
    "scope": {"level": "adset", "providers": ["meta", "google"], "account_ids": ["act_1", "act-2"],
              "campaign_ids": ["c.1"], "name_contains": "shoes"},
    "conditions": {"op": "or", "conditions": [
        {"metric": "spend", "operator": ">=", "value": "80"},
        {"op": "and", "conditions": [{"metric": "roas", "operator": "<", "value": "1.5"}]},
    ]},
    "window": {"kind": "days", "n": 3},
    "guards": {"min_spend": "50", "min_impressions": 1000, "min_clicks": 10},
    "trigger": {"mode": "cooldown", "minutes": 60},
    "actions": {"notify": [str(uuid.uuid4())], "pause": {"enabled": True, "dry_run": False},
                "notify_recovery": False, "resume_on_recovery": True},
}
SLACK = {"kind": "slack", "name": "#alerts", "webhook_url": "https://hooks.slack.com/services/T/B/x"}
EMAIL = {"kind": "email", "name": "buyers", "recipients": ["ana@shop.example", "bo@shop.example"]}


def string_leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(doc, str):
        yield path
    elif isinstance(doc, dict):
        for k, v in doc.items():
            yield from string_leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from string_leaves(v, (*path, i))


def with_nul(doc: Any, path: tuple[Any, ...]) -> Any:
    copy = json.loads(json.dumps(doc))
    at = copy
    for p in path[:-1]:
        at = at[p]
    at[path[-1]] = at[path[-1]][:1] + "\x00" + at[path[-1]][1:]
    return copy


BODIES: list[tuple[Any, dict[str, Any]]] = [
    (TypeAdapter(RuleIn), FULL_RULE), (TypeAdapter(ChannelIn), SLACK), (TypeAdapter(ChannelIn), EMAIL),
]


@pytest.mark.parametrize(("adapter", "body"), BODIES, ids=["rule", "slack", "email"])
def test_every_text_of_an_api_body_refuses_nul(adapter: TypeAdapter[Any], body: dict[str, Any]) -> None:
    adapter.validate_python(body)  # the unaltered body is valid
    leaves = list(string_leaves(body))
    assert len(leaves) >= 3
    for path in leaves:
        with pytest.raises(ValidationError):
            adapter.validate_python(with_nul(body, path))


def test_free_text_names_the_problem() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        RuleIn.model_validate({**FULL_RULE, "name": "a\x00b"})
    with pytest.raises(ValidationError, match="NUL"):
        TypeAdapter(Text).validate_python("\x00")
    assert TypeAdapter(Text).validate_python("ok \u2603") == "ok \u2603"


class Dates(BaseModel):
    day: ApiDate | None = None
    at: ApiDateTime | None = None


@pytest.mark.parametrize("day", [MIN_DATE, MAX_DATE, date(2026, 3, 29)])
def test_dates_within_the_range(day: date) -> None:
    assert Dates(day=day).day == day
    at = datetime(day.year, day.month, day.day, 23, 59, tzinfo=timezone(timedelta(hours=-5)))
    assert Dates(at=at).at == at


@pytest.mark.parametrize("day", [date.min, MIN_DATE - timedelta(days=1), MAX_DATE + timedelta(days=1), date.max])
def test_dates_outside_the_range(day: date) -> None:
    with pytest.raises(ValidationError, match=f"{MIN_DATE.isoformat()} and {MAX_DATE.isoformat()}"):
        Dates(day=day)
    with pytest.raises(ValidationError, match="between"):
        Dates(at=datetime(day.year, day.month, day.day, tzinfo=UTC))


def test_a_datetime_near_the_end_of_time_is_refused_not_overflowed() -> None:
    with pytest.raises(ValidationError, match="between"):
        Dates.model_validate({"at": "9999-12-31T23:59:59-05:00"})


@pytest.mark.parametrize("text", ['{"v": NaN}', '{"v": Infinity}', '[-Infinity]', '{"v": [1, NaN]}'])
def test_non_finite_numbers_are_malformed_json(text: str) -> None:
    with pytest.raises(json.JSONDecodeError, match="finite"):
        loads_json(text)
    assert json.loads(text) is not None  # what Python's reader alone would have taken


def test_numbers_are_exact_and_bounded() -> None:
    doc = loads_json(b'{"a": 0.1, "b": 12, "c": -3.50, "d": 1e999, "e": 123456789012345678901234567890}')
    assert doc == {"a": Decimal("0.1"), "b": 12, "c": Decimal("-3.50"), "d": Decimal("1e999"),
                   "e": 123456789012345678901234567890}
    assert isinstance(doc["a"], Decimal) and isinstance(doc["b"], int)
    with pytest.raises(json.JSONDecodeError, match="at most 40 characters"):
        loads_json("[" + "9" * 41 + "]")
    with pytest.raises(json.JSONDecodeError, match="at most 40 characters"):
        loads_json("[0." + "1" * 40 + "]")
    with pytest.raises(json.JSONDecodeError):
        loads_json(b"{")  # ordinary malformed JSON is unchanged
