"""Tool results as the copilot holds them: tables of exact values, their formatting, and
the cells an answer may cite.

A tool returns a :class:`ResultTable` (exact values: ``Decimal`` money, ``int`` counts,
``None`` for an undefined ratio).  The loop numbers tables ``t1``, ``t2``... per question;
rows are numbered from 1.  The model receives :func:`for_model` (exact values as strings,
each row with its ``ref``) and cites a cell as ``{{t1.r2.spend}}``; the server writes
:func:`format_cell` of that cell in its place, so what the user reads is always the
table's own value, formatted one way everywhere.

Formats (by column kind): money ``1,234.50 USD`` (two decimals, half away from zero, the
row's or the table's currency); count ``12,345``; decimal ``12.5`` (at most two
decimals); multiple ``3.21x`` (ROAS); percent ``2.35%`` (a fraction x 100, CTR); change
``+12.3%``; date ``2026-12-01``; time ``2026-12-01 14:15``; text and id as they are;
an undefined value ``n/a``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, Literal

ColumnKind = Literal["text", "id", "date", "time", "money", "count", "decimal", "multiple", "percent", "change"]
Cell = str | int | Decimal | date | datetime | None
DIMENSION_KINDS: Final = frozenset({"text", "id", "date", "time"})
NA: Final = "n/a"
REF = re.compile(r"t([1-9][0-9]{0,2})\.r([1-9][0-9]{0,4})\.([a-z][a-z0-9_]{0,63})")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: ColumnKind


@dataclass(frozen=True, slots=True)
class ResultTable:
    """One tool result.  ``currency`` applies to money cells of rows without a
    ``currency`` column value (a result never sums across currencies)."""

    tool: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]
    currency: str | None = None
    period_start: date | None = None
    period_end: date | None = None
    timezone: str | None = None
    freshness: datetime | None = None
    settling: tuple[date, ...] = ()
    truncated: bool = False
    notes: tuple[str, ...] = ()  # said to the model with the rows (e.g. "2 days still settling")

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column in {names}")
        for r in self.rows:
            if len(r) != len(self.columns):
                raise ValueError("a row does not match the columns")

    def index(self, column: str) -> int | None:
        for i, c in enumerate(self.columns):
            if c.name == column:
                return i
        return None

    def currency_of(self, row: Sequence[Cell]) -> str | None:
        i = self.index("currency")
        if i is not None and isinstance(row[i], str):
            return str(row[i])
        return self.currency

    def currencies(self) -> tuple[str, ...]:
        seen = {self.currency_of(r) for r in self.rows} | ({self.currency} if self.currency else set())
        return tuple(sorted(c for c in seen if c))


def _group(digits: str) -> str:
    neg = digits.startswith("-")
    whole, _, frac = digits.lstrip("-").partition(".")
    out = f"{int(whole):,}" + (f".{frac}" if frac else "")
    return f"-{out}" if neg else out


def _fixed(v: Decimal, places: int) -> str:
    q = v.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if q == 0:
        q = abs(q)  # no "-0.00"
    return format(q, "f")


def format_cell(value: Cell, kind: ColumnKind, currency: str | None = None) -> str:
    """The one way a value is shown, in answers and in the rows event."""
    if value is None:
        return NA
    if kind in ("text", "id"):
        return str(value)
    if kind == "date":
        return value.isoformat() if isinstance(value, date | datetime) else str(value)
    if kind == "time":
        return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else str(value)
    if isinstance(value, date | datetime | str):
        return str(value)
    d = Decimal(value)
    if kind == "money":
        s = _group(_fixed(d, 2))
        return f"{s} {currency}" if currency else s
    if kind == "count":
        return _group(_fixed(d, 0))
    if kind == "decimal":
        s = _fixed(d, 2)
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return _group(s)
    if kind == "multiple":
        return _group(_fixed(d, 2)) + "x"
    if kind == "percent":
        return _group(_fixed(d * 100, 2)) + "%"
    # change: a relative change as a fraction
    s = _group(_fixed(d * 100, 1))
    return ("+" if d > 0 and not s.startswith("-") and s != "0.0" else "") + s + "%"


def _raw(value: Cell) -> Any:
    if value is None or isinstance(value, int | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    return value.isoformat()


@dataclass
class Tables:
    """The result tables of one question, numbered in arrival order."""

    tables: dict[str, ResultTable] = field(default_factory=dict)

    def add(self, table: ResultTable) -> str:
        tid = f"t{len(self.tables) + 1}"
        self.tables[tid] = table
        return tid

    def __len__(self) -> int:
        return len(self.tables)

    def __iter__(self) -> Iterator[tuple[str, ResultTable]]:
        return iter(self.tables.items())

    def cell(self, ref: str) -> str | None:
        """The formatted value a citation ``t1.r2.spend`` stands for; None if the table,
        row or column does not exist."""
        m = REF.fullmatch(ref)
        if m is None:
            return None
        t = self.tables.get(f"t{m.group(1)}")
        if t is None:
            return None
        row_no, col = int(m.group(2)), m.group(3)
        i = t.index(col)
        if i is None or row_no > len(t.rows):
            return None
        row = t.rows[row_no - 1]
        return format_cell(row[i], t.columns[i].kind, t.currency_of(row))

    def dimension_values(self) -> set[str]:
        """Every text, id, date and time cell (formatted): what an answer may name
        without citing it."""
        out: set[str] = set()
        for _, t in self:
            for r in t.rows:
                for c, v in zip(t.columns, r, strict=True):
                    if c.kind in DIMENSION_KINDS and v is not None:
                        out.add(format_cell(v, c.kind))
            for d in (t.period_start, t.period_end, *t.settling):
                if d is not None:
                    out.add(d.isoformat())
        return out


def rows_formatted(table: ResultTable) -> tuple[tuple[str, ...], ...]:
    return tuple(
        tuple(format_cell(v, c.kind, table.currency_of(r)) for c, v in zip(table.columns, r, strict=True))
        for r in table.rows
    )


def for_model(tid: str, table: ResultTable) -> str:
    """The tool_result text: exact values, each row with the ref to cite its cells by.
    Tenant text (names) is data inside JSON strings, never instructions."""
    doc: dict[str, Any] = {
        "table": tid,
        "cite_cells_as": "{{" + tid + ".r<row>.<column>}}",
        "columns": [{"name": c.name, "kind": c.kind} for c in table.columns],
        "rows": [{"ref": f"{tid}.r{n}", **{c.name: _raw(v) for c, v in zip(table.columns, r, strict=True)}}
                 for n, r in enumerate(table.rows, start=1)],
        "currency": table.currency,
        "period": None if table.period_start is None else
        {"from": _raw(table.period_start), "to": _raw(table.period_end), "timezone": table.timezone},
        "truncated": table.truncated,
    }
    if table.settling:
        doc["settling_days"] = [d.isoformat() for d in table.settling]
    if table.notes:
        doc["notes"] = list(table.notes)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
