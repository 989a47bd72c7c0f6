"""The fast path never accepts what the contract refuses, and agrees where it accepts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.kafka import encode_snapshot
from domain.sim.generator import poll_stream
from domain.sim.world import build_world
from schemas.fastpath import fast_parse
from schemas.insight import InvalidInsight, _validate_model
from tests.schemas.test_insight import GOOD, WRONG_TYPES


def test_agrees_with_the_model_on_simulated_traffic() -> None:
    world = build_world(3)
    start = datetime.now(UTC) - timedelta(hours=30)
    n = 0
    for snap in poll_stream(world, start, 20, seed=3):
        _, value = encode_snapshot(snap)
        fast = fast_parse(value)
        assert fast is not None, value  # canonical messages must take the fast path
        assert fast == _validate_model(value) == snap
        n += 1
    assert n > 1000


odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**16), 10**16), st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from([
        "", " 1.5", "1.5 ", "1_000", "1e3", "-0", "0.1234567", "99999999999", "9999999999.999999",
        "10000000000.000001", "NaN", "Infinity", "+1", "01.50", "2026-11-25", "2026-02-30",
        "2026-11-25T07:59:00Z", "2026-11-25T07:59:00+05:45", "2026-11-25T07:59Z", "2026-11-25 07:59:00Z",
        "2026-11-25T07:59:00", "2026-11-25T23:59:60Z", "7B0C0E1E-1111-4A4A-9A9A-111111111111",
        "7b0c0e1e11114a4a9a9a111111111111", "{7b0c0e1e-1111-4a4a-9a9a-111111111111}",
        "UTC", "utc", "Europe/Berlin", "Mars/Base", "../etc", "USD", "usd", "US", "ad", "campaign",
        "meta", "sim", "metricx.insight.v1", "a:b", "x" * 129, "ok-id_1.2", "é",
        # wrong types the model used to coerce, and times at the calendar's edges
        100.0, 1e1, "2", "1795478400", 1795478400, "1_2.5", ".5", "5.", "١٢", "0001-01-01",
        "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59Z",
    ]),
)


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([*GOOD.keys(), "extra"]), odd_values, st.booleans()), max_size=3)
)
def test_never_accepts_what_the_model_refuses(mutations: list[tuple[str, Any, bool]]) -> None:
    event = dict(GOOD)
    for field, value, delete in mutations:
        if delete:
            event.pop(field, None)
        else:
            event[field] = value
    raw = json.dumps(event).encode()
    fast = fast_parse(raw)
    if fast is None:
        return
    try:
        model = _validate_model(raw)
    except InvalidInsight as exc:
        pytest.fail(f"fast path accepted what the model refuses ({exc.reason}): {raw!r}")
    assert fast == model


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_both_refuse_wrong_types(field: str, value: Any) -> None:
    """The fast path never takes them, and the model (which decides) refuses them."""
    raw = json.dumps({**GOOD, field: value}).encode()
    assert fast_parse(raw) is None
    with pytest.raises(InvalidInsight):
        _validate_model(raw)
