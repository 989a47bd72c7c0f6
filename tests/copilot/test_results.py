"""Result tables: the one formatting of values (expected strings written by hand), the
cells a citation may name, and what the model receives."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import pytest

from copilot.results import Cell, Column, ColumnKind, ResultTable, Tables, for_model, format_cell


@pytest.mark.parametrize(("value", "kind", "currency", "shown"), [
    (Decimal("1234.505"), "money", "EUR", "1,234.51 EUR"),  # half away from zero
    (Decimal("-1234.505"), "money", "USD", "-1,234.51 USD"),
    (Decimal("-0.001"), "money", "USD", "0.00 USD"),  # no negative zero
    (Decimal("1000000"), "money", None, "1,000,000.00"),
    (1234567, "count", None, "1,234,567"),
    (Decimal("12.50"), "decimal", None, "12.5"),
    (Decimal("3"), "decimal", None, "3"),
    (Decimal("1234.567"), "decimal", None, "1,234.57"),
    (Decimal("3.2149"), "multiple", None, "3.21x"),
    (Decimal("0.023456"), "percent", None, "2.35%"),
    (Decimal("0.1234"), "change", None, "+12.3%"),
    (Decimal("-0.1234"), "change", None, "-12.3%"),
    (Decimal("0"), "change", None, "0.0%"),
    (None, "multiple", None, "n/a"),
    (date(2026, 12, 1), "date", None, "2026-12-01"),
    (datetime(2026, 12, 1, 14, 15), "time", None, "2026-12-01 14:15"),
    ("Summer Sale", "text", None, "Summer Sale"),
])
def test_format_cell(value: Cell, kind: ColumnKind, currency: str | None, shown: str) -> None:
    assert format_cell(value, kind, currency) == shown


T = ResultTable(
    "metrics_query",
    (Column("campaign", "text"), Column("currency", "text"), Column("spend", "money")),
    (("A", "EUR", Decimal("10")), ("B", "USD", Decimal("20.5"))),
    currency=None,
)


def test_cells_by_reference_use_the_rows_currency() -> None:
    tables = Tables()
    assert tables.add(T) == "t1" and tables.add(T) == "t2"
    assert tables.cell("t1.r1.spend") == "10.00 EUR"
    assert tables.cell("t2.r2.spend") == "20.50 USD"
    for bad in ("t1.r3.spend", "t1.r0.spend", "t1.r1.roas", "t3.r1.spend", "t1.r1", "t1.r1.spend; drop", ""):
        assert tables.cell(bad) is None, bad
    assert T.currencies() == ("EUR", "USD")


def test_the_model_receives_exact_values_and_refs() -> None:
    doc = json.loads(for_model("t4", T))
    assert doc["table"] == "t4" and doc["cite_cells_as"] == "{{t4.r<row>.<column>}}"
    assert doc["rows"][1] == {"ref": "t4.r2", "campaign": "B", "currency": "USD", "spend": "20.5"}


def test_a_table_refuses_ragged_rows_and_duplicate_columns() -> None:
    with pytest.raises(ValueError):
        ResultTable("x", (Column("a", "text"),), (("1", "2"),))
    with pytest.raises(ValueError):
        ResultTable("x", (Column("a", "text"), Column("a", "count")), ())
