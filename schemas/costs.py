"""The cost contract: what a merchant may enter as a cost, and how a stored cost reads back.

A cost has a label, a category, a currency and one of four schedules, told apart by
``kind``:

- ``one_off``: ``amount`` on one ``day``;
- ``spread``: ``amount`` spread over ``start`` … ``end``, both days included;
- ``monthly``: ``amount`` every calendar month from ``start`` to ``end`` (both included;
  no ``end``: until further notice); a month only partly covered gets its share by days;
- ``percent``: ``rate`` percent of the day's ``spend`` or ``revenue`` (``base``), of one
  ``provider`` or of all, in the cost's own currency, from ``start`` to ``end``.

``rate`` is a percentage, not a fraction: ``2.9`` means 2.9 % (what a merchant reads on
an invoice), at most four decimals (``0.0001`` %).

Money is exact: an amount has no more decimals than its currency's minor unit
(:mod:`schemas.currencies`: JPY none, USD two, KWD three); a currency not in that table
is refused.  A negative amount or rate is accepted only for the ``refund`` and ``credit``
categories, and zero never (a cost of nothing is a typo).  ``counts_as_ad_spend`` puts the
cost into ad spend (ROAS, MER) instead of the other costs.  Dates are calendar days of the
workspace's timezone, within 2000 … 2100, ``end`` on or after ``start``, and a bounded
range spans at most ten years.  Unknown fields, booleans or numbers where text belongs,
Unix times as dates, and text with control characters are refused, never coerced.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from schemas.currencies import MINOR_UNITS
from schemas.edge import preview
from schemas.insight import Provider
from schemas.snapshot import MAX_MONEY

CATEGORIES: Final = ("shipping", "tools", "agency", "payroll", "cogs", "fees", "other", "refund", "credit")
Category = Literal["shipping", "tools", "agency", "payroll", "cogs", "fees", "other", "refund", "credit"]
# The only categories whose amounts (or rates) may be negative: money coming back.
SIGNED_CATEGORIES: Final = frozenset({"refund", "credit"})
KINDS: Final = ("one_off", "spread", "monthly", "percent")
Base = Literal["spend", "revenue"]

FIRST_DAY: Final = date(2000, 1, 1)
LAST_DAY: Final = date(2100, 12, 31)
MAX_SPAN_DAYS: Final = 3653  # ten years of days, their (at most three) leap days included
MAX_LABEL: Final = 200
RATE_DECIMALS: Final = 4
MAX_RATE: Final = Decimal(100)

# ---- field types ---------------------------------------------------------------------
# TODO(lead): schemas.edge is getting shared NUL-free text and date types on another
# branch; once they are on main, _single_line and _date_text below should use them.


def _single_line(v: str) -> str:
    """A label is one line of printable text: NUL cannot be stored in PostgreSQL text, and
    other control characters break logs and CSV exports.  (Pydantic itself refuses a
    lone surrogate, valid JSON ``"\\ud800"`` that UTF-8 cannot encode.)"""
    bad = next((c for c in v if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ValueError(f"must be one line of printable text (found U+{ord(bad):04X})")
    return v


Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_LABEL),
    AfterValidator(_single_line),
]

_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date_text(v: object) -> object:
    """``YYYY-MM-DD`` only: Pydantic's lax mode would read a number as a Unix time."""
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    if not isinstance(v, str) or not _DATE_TEXT.fullmatch(v):
        raise ValueError("must be a date string YYYY-MM-DD")
    return v


def _in_calendar(v: date) -> date:
    if not FIRST_DAY <= v <= LAST_DAY:
        raise ValueError(f"must be between {FIRST_DAY} and {LAST_DAY}")
    return v


Day = Annotated[date, BeforeValidator(_date_text), AfterValidator(_in_calendar)]

# Plain decimal text, bounded in length; the number of decimals is judged by value below
# (``"100.00"`` yen is a hundred yen), so a few trailing zeros are let through here.
_NUMBER_TEXT = re.compile(r"-?[0-9]{1,16}(\.[0-9]{1,12})?")


def _number(v: object) -> object:
    """A JSON number or a string of one; ``true`` is not 1 and ``"1e3"`` is not money."""
    if isinstance(v, bool) or not isinstance(v, str | int | float | Decimal):
        raise ValueError("must be a decimal number such as 12.34 or a string of one")
    if isinstance(v, str) and not _NUMBER_TEXT.fullmatch(v):
        raise ValueError("must be a decimal number such as 12.34 (no blanks, exponents, '+' or words)")
    return v


# The constraints first: the bounds and finiteness are checked before anything else.
Amount = Annotated[
    Decimal, Field(ge=-MAX_MONEY, le=MAX_MONEY, allow_inf_nan=False), BeforeValidator(_number)
]
Rate = Annotated[
    Decimal,
    Field(ge=-MAX_RATE, le=MAX_RATE, allow_inf_nan=False, description="percent: 2.9 means 2.9 %"),
    BeforeValidator(_number),
]


def _known_currency(v: str) -> str:
    if v not in MINOR_UNITS:
        raise ValueError(f"unknown currency {preview(v, 8)}: an ISO 4217 code in capitals, such as USD, EUR or JPY")
    return v


Currency = Annotated[str, AfterValidator(_known_currency)]

# ---- checks across fields ------------------------------------------------------------


def _decimals(value: Decimal, places: int, what: str) -> None:
    if value != value.quantize(Decimal(1).scaleb(-places)):
        raise ValueError(f"{what} has more than {places} decimal(s)")


def _sign(value: Decimal, category: str, what: str) -> None:
    if value == 0:
        raise ValueError(f"{what} must not be zero")
    if value < 0 and category not in SIGNED_CATEGORIES:
        raise ValueError(f"{what} may be negative only for the refund and credit categories")


def _range(start: date, end: date | None) -> None:
    if end is None:
        return
    if end < start:
        raise ValueError("end must be on or after start (both days are included)")
    if (end - start).days + 1 > MAX_SPAN_DAYS:
        raise ValueError(f"a range spans at most {MAX_SPAN_DAYS} days (ten years)")


# ---- request bodies ------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _CostBase(_Strict):
    label: Label
    category: Category
    currency: Currency
    counts_as_ad_spend: StrictBool = Field(
        default=False, description="true: the cost is ad spend (enters ROAS and MER); false: another cost"
    )

    def _money(self, amount: Decimal) -> None:
        _decimals(amount, MINOR_UNITS[self.currency], f"amount in {self.currency}")
        _sign(amount, self.category, "amount")


class OneOffCostIn(_CostBase):
    kind: Literal["one_off"]
    day: Day
    amount: Amount

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        self._money(self.amount)
        return self


class SpreadCostIn(_CostBase):
    kind: Literal["spread"]
    start: Day
    end: Day = Field(description="included, like start")
    amount: Amount = Field(description="the whole amount, split over the days exactly")

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        self._money(self.amount)
        _range(self.start, self.end)
        return self


class MonthlyCostIn(_CostBase):
    kind: Literal["monthly"]
    start: Day
    end: Day | None = Field(default=None, description="included; null: until further notice")
    amount: Amount = Field(description="per calendar month; a partly covered month pays its days' share")

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        self._money(self.amount)
        _range(self.start, self.end)
        return self


class PercentCostIn(_CostBase):
    kind: Literal["percent"]
    start: Day
    end: Day | None = Field(default=None, description="included; null: until further notice")
    rate: Rate
    base: Base = Field(description="the day's platform-reported spend or revenue in the cost's currency")
    provider: Provider | None = Field(default=None, description="null: all providers")

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        _decimals(self.rate, RATE_DECIMALS, "rate")
        _sign(self.rate, self.category, "rate")
        _range(self.start, self.end)
        return self


CostIn = Annotated[
    OneOffCostIn | SpreadCostIn | MonthlyCostIn | PercentCostIn, Field(discriminator="kind")
]
COST_IN: Final[TypeAdapter[CostIn]] = TypeAdapter(CostIn)

# ---- responses -----------------------------------------------------------------------


class _Stored(_Strict):
    id: UUID
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = Field(description="who made the last change (the audit has every change)")


class OneOffCostOut(OneOffCostIn, _Stored):
    pass


class SpreadCostOut(SpreadCostIn, _Stored):
    pass


class MonthlyCostOut(MonthlyCostIn, _Stored):
    pass


class PercentCostOut(PercentCostIn, _Stored):
    pass


CostOut = Annotated[
    OneOffCostOut | SpreadCostOut | MonthlyCostOut | PercentCostOut, Field(discriminator="kind")
]
COST_OUT: Final[TypeAdapter[CostOut]] = TypeAdapter(CostOut)


class CostList(BaseModel):
    costs: list[CostOut]
