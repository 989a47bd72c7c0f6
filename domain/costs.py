"""Costs allocated to days, and the P&L they make with the platforms' spend and revenue.

Why dates, not instants
-----------------------
A cost is allocated to calendar dates of the workspace's timezone: the same local
``report_date`` the ad platforms report spend and revenue on, so a day's costs sit beside
that day's metrics.  A date is one whole day whatever its length: the 23-hour day when
clocks go forward and the 25-hour day when they go back each get exactly one share, and
nothing here converts between zones (spreading by hours would give the short day 23/24
of a share, and a range of instants needs a zone to know on which day its ends fall).
A range is always [start, end] with *both* ends included, and the next range starts on
end + 1.  The original product's double-counted day came from an end taken once as
inclusive and once as exclusive; here there is only one kind of end.

Exact money
-----------
Inside, amounts are integers of the currency's minor unit (cents, yen, fils).  An amount
is split over n days by the largest-remainder method: each day gets ⌊amount / n⌋ and the
units left over go one each to the days with the largest remainders; as all remainders
are equal, to the earliest days first.  A negative amount (refund, credit) is split like
its absolute value, negated.  So a cost's days always add up to the cost: never a lost or
an extra cent.

One rounding rule everywhere: half away from zero (``ROUND_HALF_UP`` for Decimal), which
is what PostgreSQL's ``round(numeric)`` does, so an analyst can reproduce each figure in
SQL.  It applies to a partly covered month and to percentage costs.

Schedules
---------
- one-off: the whole amount on its day.
- spread: the amount split over every day of [start, end].
- monthly: every calendar month that [start, end] covers (no end: every month from start
  on) costs the amount, split over the month's days (28 to 31).  A month covered only in
  part (the start or end falls inside it) costs round(amount × covered days / days in the
  month), split over the covered days only.  A fully covered month sums to the amount.
- percent: each day of [start, end] costs round(rate / 100 × base), the base being that
  day's platform-reported spend or revenue in the cost's currency, of one provider or of
  all of them summed before rounding.  Rounded per day: a period's percentage cost is the
  sum of its days.  The base is the day's final value as stored now, so a restatement
  changes the input and the cost follows on the next computation.  The base never
  includes costs: no cost is a percentage of another cost.

P&L, per currency (currencies are never added together)
-------------------------------------------------------
- revenue: platform-reported revenue (the platforms' attribution, not the shop's books);
- ad spend = platform spend (per provider) + the costs flagged ``counts_as_ad_spend``;
- other costs = the costs not so flagged (per category);
- gross profit = revenue − ad spend;
- net profit = gross profit − other costs;
- net ROAS = revenue / ad spend;
- MER = revenue / (ad spend + other costs), revenue over everything spent.
Ratios are rounded like the dashboard's (6 decimals, half away from zero) and are None
when the denominator is zero, or negative (credits larger than the spend): a ratio over
nothing, or over less than nothing, means nothing.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from schemas.costs import MonthlyCostIn, OneOffCostIn, PercentCostIn, SpreadCostIn
from schemas.currencies import minor_units

ONE_DAY: Final = timedelta(days=1)
RATIO_DECIMALS: Final = 6  # as domain.kpis (TODO(lead): share its ratio() once it moves to domain/)
_RATIO_QUANT: Final = Decimal(1).scaleb(-RATIO_DECIMALS)

# ---- costs as plain data -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OneOff:
    day: date
    amount: int  # minor units


@dataclass(frozen=True, slots=True)
class Spread:
    start: date
    end: date  # included
    amount: int  # minor units, the whole range


@dataclass(frozen=True, slots=True)
class Monthly:
    start: date
    end: date | None  # included; None: until further notice
    amount: int  # minor units, per full month


@dataclass(frozen=True, slots=True)
class Percent:
    start: date
    end: date | None  # included; None: until further notice
    rate: Decimal  # percent: 2.9 is 2.9 %
    base: Literal["spend", "revenue"]
    provider: str | None  # None: all providers


Schedule = OneOff | Spread | Monthly | Percent


@dataclass(frozen=True, slots=True)
class Cost:
    currency: str
    category: str
    counts_as_ad_spend: bool
    schedule: Schedule


@dataclass(frozen=True, slots=True)
class Measures:
    """A day's (or a period's) platform-reported spend and revenue."""

    spend: Decimal = Decimal(0)
    revenue: Decimal = Decimal(0)


# (day, currency, provider) -> that day's final measures
DailyBase = Mapping[tuple[date, str, str], Measures]
NO_BASE: Final[DailyBase] = MappingProxyType({})


class Slot(NamedTuple):
    """What allocated costs are summed by."""

    day: date
    currency: str
    category: str
    counts_as_ad_spend: bool


def to_minor(amount: Decimal, currency: str) -> int:
    """``amount`` in minor units; ValueError if it has more decimals than the currency."""
    scaled = amount.scaleb(minor_units(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more decimals than {currency} allows")
    return int(scaled)


def from_minor(units: int, currency: str) -> Decimal:
    """Minor units back to an amount with exactly the currency's decimals (500 → 5.00)."""
    return Decimal(units).scaleb(-minor_units(currency))


def cost_from_contract(c: OneOffCostIn | SpreadCostIn | MonthlyCostIn | PercentCostIn) -> Cost:
    """The validated API body (or a stored cost read back through it) as plain data."""
    schedule: Schedule
    match c:
        case OneOffCostIn():
            schedule = OneOff(c.day, to_minor(c.amount, c.currency))
        case SpreadCostIn():
            schedule = Spread(c.start, c.end, to_minor(c.amount, c.currency))
        case MonthlyCostIn():
            schedule = Monthly(c.start, c.end, to_minor(c.amount, c.currency))
        case PercentCostIn():
            schedule = Percent(c.start, c.end, c.rate, c.base, c.provider)
    return Cost(c.currency, c.category, c.counts_as_ad_spend, schedule)


# ---- exact arithmetic ----------------------------------------------------------------


def share(total: int, n: int, i: int) -> int:
    """Day ``i``'s (0-based) part of ``total`` minor units split over ``n`` days by largest
    remainder, the leftover units to the earliest days.  O(1): a ten-year spread read for
    one day does not split all of its days."""
    q, r = divmod(abs(total), n)
    part = q + (1 if i < r else 0)
    return part if total >= 0 else -part


def round_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (denominator > 0) to an integer, halves away from zero."""
    q, r = divmod(abs(numerator), denominator)
    if 2 * r >= denominator:
        q += 1
    return q if numerator >= 0 else -q


def percent_of(rate: Decimal, base: Decimal, exponent: int) -> int:
    """round(rate / 100 × base) in minor units of ``exponent`` decimals, exactly."""
    rn, rd = rate.as_integer_ratio()
    bn, bd = base.as_integer_ratio()
    return round_half_up(rn * bn * 10**exponent, rd * bd * 100)


# ---- allocation ----------------------------------------------------------------------

_Index = Mapping[tuple[date, str], Mapping[str, Measures]]


def _index(daily_base: DailyBase) -> dict[tuple[date, str], dict[str, Measures]]:
    out: dict[tuple[date, str], dict[str, Measures]] = defaultdict(dict)
    for (day, currency, provider), m in daily_base.items():
        out[day, currency][provider] = m
    return out


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += ONE_DAY


def _spread(total: int, start: date, end: date, lo: date, hi: date) -> Iterator[tuple[date, int]]:
    """``total`` split over [start, end]; only the days within [lo, hi] are yielded."""
    n = (end - start).days + 1
    for day in _days(max(start, lo), min(end, hi)):
        yield day, share(total, n, (day - start).days)


def _monthly(m: Monthly, lo: date, hi: date) -> Iterator[tuple[date, int]]:
    first, last = max(m.start, lo), hi if m.end is None else min(m.end, hi)
    day = first
    while day <= last:
        month_first = day.replace(day=1)
        month_last = day.replace(day=calendar.monthrange(day.year, day.month)[1])
        covered_first = max(m.start, month_first)
        covered_last = month_last if m.end is None else min(m.end, month_last)
        covered = (covered_last - covered_first).days + 1
        month_total = round_half_up(m.amount * covered, month_last.day)  # all of it when covered fully
        yield from _spread(month_total, covered_first, covered_last, day, min(last, month_last))
        day = month_last + ONE_DAY


def _percent(p: Percent, currency: str, lo: date, hi: date, index: _Index) -> Iterator[tuple[date, int]]:
    exponent = minor_units(currency)
    last = hi if p.end is None else min(p.end, hi)
    for day in _days(max(p.start, lo), last):
        by_provider = index.get((day, currency), {})
        if p.provider is None:
            measures: Iterable[Measures] = by_provider.values()
        else:
            measures = [by_provider[p.provider]] if p.provider in by_provider else []
        base = sum((getattr(m, p.base) for m in measures), Decimal(0))
        yield day, percent_of(p.rate, base, exponent)


def _allocate(cost: Cost, lo: date, hi: date, index: _Index) -> Iterator[tuple[date, int]]:
    s = cost.schedule
    match s:
        case OneOff():
            if lo <= s.day <= hi:
                yield s.day, s.amount
        case Spread():
            yield from _spread(s.amount, s.start, s.end, lo, hi)
        case Monthly():
            yield from _monthly(s, lo, hi)
        case Percent():
            yield from _percent(s, cost.currency, lo, hi, index)


def allocate(cost: Cost, first: date, last: date, daily_base: DailyBase = NO_BASE) -> dict[date, int]:
    """One cost's minor units per day of [first, last] (both included), one entry for
    each day the cost covers there (a zero too: a percentage of a day without spend)."""
    return dict(_allocate(cost, first, last, _index(daily_base)))


def allocate_for_period(
    costs: Iterable[Cost], period_start: date, period_end: date, daily_base: DailyBase = NO_BASE
) -> dict[Slot, Decimal]:
    """All costs' amounts per (day, currency, category, counts as ad spend) over
    [period_start, period_end], both included, each with its currency's decimals.

    A cost's days do not depend on the period asked: the days of [a, b] and of [b + 1, c]
    together are exactly the days of [a, c]."""
    if period_end < period_start:
        raise ValueError(f"period ends ({period_end}) before it starts ({period_start})")
    index = _index(daily_base)
    units: dict[Slot, int] = defaultdict(int)
    for cost in costs:
        for day, amount in _allocate(cost, period_start, period_end, index):
            units[Slot(day, cost.currency, cost.category, cost.counts_as_ad_spend)] += amount
    return {slot: from_minor(v, slot.currency) for slot, v in units.items()}


# ---- P&L -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PnL:
    """One currency's P&L for one period (definitions in the module docstring)."""

    currency: str
    revenue: Decimal  # platform-reported
    revenue_by_provider: Mapping[str, Decimal]
    spend_by_provider: Mapping[str, Decimal]  # platform-reported
    ad_spend_costs: Mapping[str, Decimal]  # per category, costs counted as ad spend
    other_costs: Mapping[str, Decimal]  # per category, the other costs
    ad_spend: Decimal  # platform spend + costs counted as ad spend
    other_costs_total: Decimal
    gross_profit: Decimal
    net_profit: Decimal
    net_roas: Decimal | None
    mer: Decimal | None


def _ratio(numerator: Decimal, denominator: Decimal) -> Decimal | None:
    if denominator <= 0:
        return None
    return (numerator / denominator).quantize(_RATIO_QUANT, rounding=ROUND_HALF_UP)


def pnl(period_sums: Mapping[tuple[str, str], Measures], allocated: Mapping[Slot, Decimal]) -> dict[str, PnL]:
    """Per-currency P&L of a period from the platforms' sums per (currency, provider) and
    the period's allocated costs (:func:`allocate_for_period`)."""
    revenue: dict[str, dict[str, Decimal]] = defaultdict(dict)
    spend: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for (currency, provider), m in period_sums.items():
        revenue[currency][provider] = m.revenue
        spend[currency][provider] = m.spend
    costs: dict[tuple[str, bool], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for slot, amount in allocated.items():
        costs[slot.currency, slot.counts_as_ad_spend][slot.category] += amount

    out: dict[str, PnL] = {}
    for currency in sorted(set(revenue) | {c for c, _ in costs}):
        rev = sum(revenue[currency].values(), Decimal(0))
        flagged, other = costs[currency, True], costs[currency, False]
        ad_spend = sum(spend[currency].values(), Decimal(0)) + sum(flagged.values(), Decimal(0))
        other_total = sum(other.values(), Decimal(0))
        gross = rev - ad_spend
        out[currency] = PnL(
            currency=currency,
            revenue=rev,
            revenue_by_provider=dict(sorted(revenue[currency].items())),
            spend_by_provider=dict(sorted(spend[currency].items())),
            ad_spend_costs=dict(sorted(flagged.items())),
            other_costs=dict(sorted(other.items())),
            ad_spend=ad_spend,
            other_costs_total=other_total,
            gross_profit=gross,
            net_profit=gross - other_total,
            net_roas=_ratio(rev, ad_spend),
            mer=_ratio(rev, ad_spend + other_total),
        )
    return out
