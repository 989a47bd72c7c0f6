"""Cost allocation and the P&L, against oracles written here apart from the code under
test: a generic largest-remainder apportionment in fractions, month lengths from the
standard library's calendar, percentages in fractions, local dates from zoneinfo."""

from __future__ import annotations

import calendar
import math
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.costs import (
    Cost,
    Measures,
    Monthly,
    OneOff,
    Percent,
    Slot,
    Spread,
    allocate,
    allocate_for_period,
    cost_from_contract,
    pnl,
)
from schemas.costs import COST_IN

DAY = timedelta(days=1)
# exponents written out again (ISO 4217), not read from the table under test
EXPONENTS = {"JPY": 0, "CLP": 0, "USD": 2, "EUR": 2, "GBP": 2, "KWD": 3, "BHD": 3}
currencies = st.sampled_from(sorted(EXPONENTS))
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31))
units = st.integers(min_value=-(10**12), max_value=10**12)


def money(n: int, currency: str) -> Decimal:
    return Decimal(n).scaleb(-EXPONENTS[currency])


def all_days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def round_half_away(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2)) if x >= 0 else -math.floor(-x + Fraction(1, 2))


def apportion(total: int, n: int) -> list[int]:
    """Hamilton's method for n equal claims on ``total`` units, computed on |total| in
    fractions: floors first, then one unit each by the largest remainder, ties to the
    lower index; a negative total mirrors a positive one."""
    quotas = [Fraction(abs(total), n)] * n
    parts = [math.floor(q) for q in quotas]
    order = sorted(range(n), key=lambda i: (-(quotas[i] - parts[i]), i))
    for i in order[: abs(total) - sum(parts)]:
        parts[i] += 1
    return parts if total >= 0 else [-p for p in parts]


def one_cost(cost: Cost, first: date, last: date, base: dict[tuple[date, str, str], Measures] | None = None
             ) -> dict[date, Decimal]:
    """A single cost's allocation through the public period function."""
    out = allocate_for_period([cost], first, last, base or {})
    assert all(s.currency == cost.currency and s.category == cost.category for s in out)
    return {s.day: v for s, v in out.items()}


# ---- spread: exact, both ends included ------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(currency=currencies, amount=st.integers(-(10**10), 10**10), start=days, span=st.integers(min_value=0, max_value=3652))
def test_spread_days_sum_exactly_to_the_cost_through_the_contract(currency: str, amount: int, start: date,
                                                                  span: int) -> None:
    end = start + timedelta(days=span)
    if amount == 0 or end > date(2100, 12, 31):
        return
    category = "credit" if amount < 0 else "agency"
    body = {"label": "x", "category": category, "currency": currency, "kind": "spread",
            "start": start.isoformat(), "end": end.isoformat(), "amount": str(money(amount, currency))}
    cost = cost_from_contract(COST_IN.validate_python(body))
    got = one_cost(cost, start - DAY, end + DAY)
    assert sum(got.values()) == money(amount, currency)
    assert sorted(got) == all_days(start, end)  # every day once, none outside
    assert [got[d] for d in all_days(start, end)] == [money(p, currency) for p in apportion(amount, span + 1)]
    assert all(v == v.quantize(Decimal(1).scaleb(-EXPONENTS[currency])) for v in got.values())


def test_both_ends_of_a_range_are_included_and_nothing_beyond() -> None:
    cost = Cost("USD", "tools", False, Spread(date(2024, 1, 1), date(2024, 1, 31), 3100))
    got = one_cost(cost, date(2023, 12, 1), date(2024, 2, 29))
    assert got[date(2024, 1, 1)] == Decimal("1.00")  # first end
    assert got[date(2024, 1, 31)] == Decimal("1.00")  # last end
    assert date(2023, 12, 31) not in got
    assert date(2024, 2, 1) not in got
    assert len(got) == 31
    # a period that is exactly one end day still sees that day
    assert one_cost(cost, date(2024, 1, 31), date(2024, 1, 31)) == {date(2024, 1, 31): Decimal("1.00")}
    assert one_cost(cost, date(2024, 1, 1), date(2024, 1, 1)) == {date(2024, 1, 1): Decimal("1.00")}


def test_a_one_day_range_and_a_one_off_put_everything_on_that_day() -> None:
    d = date(2024, 2, 29)
    for schedule in (Spread(d, d, 12345), OneOff(d, 12345)):
        got = one_cost(Cost("KWD", "fees", False, schedule), d - DAY, d + DAY)
        assert got == {d: Decimal("12.345")}


@given(a=days, gap1=st.integers(min_value=0, max_value=400), gap2=st.integers(min_value=0, max_value=400),
       x=units, y=units, currency=currencies)
def test_adjacent_ranges_never_share_a_day(a: date, gap1: int, gap2: int, x: int, y: int, currency: str) -> None:
    """The original bug: [a, b] then [b + 1, c] counted b twice."""
    b, c = a + timedelta(days=gap1), a + timedelta(days=gap1 + 1 + gap2)
    first = allocate(Cost(currency, "other", False, Spread(a, b, x)), a - DAY, c + DAY)
    second = allocate(Cost(currency, "other", False, Spread(b + DAY, c, y)), a - DAY, c + DAY)
    assert not set(first) & set(second)
    assert sorted(first.keys() | second.keys()) == all_days(a, c)
    assert sum(first.values()) + sum(second.values()) == x + y


# ---- any cost: a period split in two adds up to the whole -----------------------------

# costs near 2024, where the periods below look, so that most of them meet a period
near = st.dates(min_value=date(2023, 6, 1), max_value=date(2024, 12, 31))
schedules = st.one_of(
    st.builds(OneOff, near, units),
    st.builds(lambda s, n, a: Spread(s, s + timedelta(days=n), a), near, st.integers(0, 400), units),
    st.builds(lambda s, n, a: Monthly(s, None if n is None else s + timedelta(days=n), a),
              near, st.none() | st.integers(0, 400), units),
    st.builds(lambda s, n, r, b, p: Percent(s, None if n is None else s + timedelta(days=n), r, b, p),
              near, st.none() | st.integers(0, 400),
              st.integers(1, 10**6).map(lambda r: Decimal(r).scaleb(-4)),
              st.sampled_from(["spend", "revenue"]), st.sampled_from([None, "meta", "google"])),
)
cost_lists = st.lists(
    st.builds(Cost, currencies, st.sampled_from(["cogs", "agency", "refund"]), st.booleans(), schedules),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(costs=cost_lists, start=near, first_len=st.integers(0, 120), second_len=st.integers(0, 120))
def test_splitting_the_period_neither_loses_nor_doubles_a_day(costs: list[Cost], start: date, first_len: int,
                                                              second_len: int) -> None:
    mid = start + timedelta(days=first_len)
    end = mid + timedelta(days=1 + second_len)
    base = {(d, cur, p): Measures(Decimal(d.toordinal() % 97), Decimal(d.toordinal() % 89))
            for d in all_days(start, end) for cur in EXPONENTS for p in ("meta", "google")}
    whole = allocate_for_period(costs, start, end, base)
    left = allocate_for_period(costs, start, mid, base)
    right = allocate_for_period(costs, mid + DAY, end, base)
    assert not left.keys() & right.keys()
    assert {**left, **right} == whole
    assert all(start <= s.day <= end for s in whole)


# ---- monthly: month lengths and partial months -----------------------------------------


@settings(max_examples=200, deadline=None)
@given(currency=currencies, amount=units, start=days, span=st.none() | st.integers(0, 1200),
       look=st.integers(0, 1200))
def test_monthly_costs_the_amount_per_full_month_and_a_days_share_of_a_partial_one(
        currency: str, amount: int, start: date, span: int | None, look: int) -> None:
    end = None if span is None else start + timedelta(days=span)
    period_end = start + timedelta(days=look)
    got = one_cost(Cost(currency, "tools", False, Monthly(start, end, amount)), start - DAY, period_end)
    last = period_end if end is None else min(end, period_end)
    assert sorted(got) == all_days(start, last)
    by_month: dict[tuple[int, int], list[date]] = defaultdict(list)
    for d in all_days(start, last):
        by_month[d.year, d.month].append(d)
    for (y, m), seen in by_month.items():
        length = calendar.monthrange(y, m)[1]
        covered = [d for d in (date(y, m, k) for k in range(1, length + 1))
                   if d >= start and (end is None or d <= end)]
        month_total = round_half_away(Fraction(amount * len(covered), length))
        if len(covered) == length:
            assert month_total == amount
        expected = dict(zip(covered, apportion(month_total, len(covered)), strict=True))
        assert [got[d] for d in seen] == [money(expected[d], currency) for d in seen]


@pytest.mark.parametrize(("year", "days_in_feb"), [(2023, 28), (2024, 29), (2000, 29), (2100, 28)])
def test_february_has_its_own_length_leap_days_included(year: int, days_in_feb: int) -> None:
    cost = Cost("USD", "payroll", False, Monthly(date(year - 1, 11, 15), None, 2_900_00))
    got = one_cost(cost, date(year, 2, 1), date(year, 2, 28 if days_in_feb == 28 else 29))
    assert len(got) == days_in_feb
    assert sum(got.values()) == Decimal("2900.00")
    if days_in_feb == 29:
        assert got[date(year, 2, 29)] == Decimal("100.00")


def test_a_partial_first_and_last_month_cost_their_days_share() -> None:
    # 31 days in January: from the 21st, 11 days of 310.00 -> 110.00; 30 in April: to the 10th -> 100.00
    cost = Cost("EUR", "tools", False, Monthly(date(2025, 1, 21), date(2025, 4, 10), 310_00))
    got = one_cost(cost, date(2025, 1, 1), date(2025, 4, 30))

    def month(m: int) -> Decimal:
        return sum((v for d, v in got.items() if d.month == m), Decimal(0))

    assert (month(1), month(2), month(3), month(4)) == (Decimal("110.00"), Decimal("310.00"),
                                                        Decimal("310.00"), Decimal("103.33"))
    assert min(got) == date(2025, 1, 21) and max(got) == date(2025, 4, 10)


# ---- DST: one allocation per local date ------------------------------------------------


@pytest.mark.parametrize(("start", "end", "odd_day", "hours"), [
    (date(2024, 3, 28), date(2024, 4, 2), date(2024, 3, 31), 23),     # clocks forward
    (date(2024, 10, 25), date(2024, 10, 29), date(2024, 10, 27), 25),  # clocks back
])
def test_a_range_across_a_dst_change_gets_one_share_per_local_date(start: date, end: date, odd_day: date,
                                                                   hours: int) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    n = (end - start).days + 1
    cost = Cost("EUR", "agency", False, Spread(start, end, n * 1000))
    got = allocate(cost, start - DAY, end + DAY)
    # every local date the workspace lives through in that range, hour by hour in UTC
    t = datetime(start.year, start.month, start.day, tzinfo=berlin).astimezone(UTC)
    stop = datetime(end.year, end.month, end.day, tzinfo=berlin).astimezone(UTC) + timedelta(hours=30)
    local: Counter[date] = Counter()
    while t < stop:
        d = t.astimezone(berlin).date()
        if d <= end:
            local[d] += 1
        t += timedelta(hours=1)
    assert sorted(local) == sorted(got)
    assert local[odd_day] == hours and {h for d, h in local.items() if d != odd_day} == {24}
    assert set(got.values()) == {1000}  # the short and the long day too: a day is a day


# ---- percent: rate × the day's final value ----------------------------------------------

bases = st.dictionaries(
    st.tuples(st.dates(date(2024, 1, 1), date(2024, 1, 20)), st.sampled_from(["USD", "JPY", "KWD"]),
              st.sampled_from(["meta", "google", "tiktok"])),
    st.builds(Measures, st.integers(0, 10**12).map(lambda c: Decimal(c).scaleb(-6)),
              st.integers(0, 10**12).map(lambda c: Decimal(c).scaleb(-6))),
    max_size=40,
)


def percent_oracle(rate: Decimal, base: dict[tuple[date, str, str], Measures], day: date, currency: str,
                   measure: str, provider: str | None) -> Decimal:
    total = sum((Fraction(str(getattr(m, measure))) for (d, c, p), m in base.items()
                 if d == day and c == currency and provider in (None, p)), Fraction(0))
    exact = Fraction(str(rate)) / 100 * total * 10 ** EXPONENTS[currency]
    return money(round_half_away(exact), currency)


@settings(max_examples=200, deadline=None)
@given(base=bases, rate=st.integers(1, 10**6).map(lambda r: Decimal(r).scaleb(-4)),
       currency=st.sampled_from(["USD", "JPY", "KWD"]), measure=st.sampled_from(["spend", "revenue"]),
       provider=st.sampled_from([None, "meta", "google"]),
       restated=st.builds(Measures, st.integers(0, 10**9).map(lambda c: Decimal(c).scaleb(-2)),
                          st.integers(0, 10**9).map(lambda c: Decimal(c).scaleb(-2))))
def test_percent_is_the_rate_times_each_days_final_value(base: dict[tuple[date, str, str], Measures],
                                                         rate: Decimal, currency: str, measure: str,
                                                         provider: str | None, restated: Measures) -> None:
    first, last = date(2024, 1, 3), date(2024, 1, 17)
    cost = Cost(currency, "fees", False, Percent(first, last, rate, measure, provider))  # type: ignore[arg-type]
    got = one_cost(cost, date(2024, 1, 1), date(2024, 1, 20), base)
    assert sorted(got) == all_days(first, last)
    for d in all_days(first, last):
        assert got[d] == percent_oracle(rate, base, d, currency, measure, provider)
    # a restatement of one day moves that day's cost, and only that day's
    day = date(2024, 1, 9)
    base2 = {**base, (day, currency, provider or "meta"): restated}
    got2 = one_cost(cost, date(2024, 1, 1), date(2024, 1, 20), base2)
    assert got2[day] == percent_oracle(rate, base2, day, currency, measure, provider)
    assert {d: v for d, v in got2.items() if d != day} == {d: v for d, v in got.items() if d != day}


def test_percent_rounds_half_away_from_zero_per_day() -> None:
    # 2.5 % of 0.10 USD = 0.0025 -> 0.00; of 0.20 = 0.005 -> 0.01 (half away from zero)
    base = {(date(2024, 1, 1), "USD", "meta"): Measures(spend=Decimal("0.10")),
            (date(2024, 1, 2), "USD", "meta"): Measures(spend=Decimal("0.20"))}
    cost = Cost("USD", "agency", True, Percent(date(2024, 1, 1), date(2024, 1, 2), Decimal("2.5"), "spend", None))
    assert one_cost(cost, date(2024, 1, 1), date(2024, 1, 2), base) == {
        date(2024, 1, 1): Decimal("0.00"), date(2024, 1, 2): Decimal("0.01")}
    refund = Cost("USD", "refund", False, Percent(date(2024, 1, 2), None, Decimal("-2.5"), "spend", None))
    assert one_cost(refund, date(2024, 1, 1), date(2024, 1, 2), base) == {date(2024, 1, 2): Decimal("-0.01")}


# ---- P&L ---------------------------------------------------------------------------------


def ratio_oracle(num: Fraction, den: Fraction) -> Decimal | None:
    if den <= 0:
        return None
    return Decimal(round_half_away(num / den * 10**6)).scaleb(-6)


@settings(max_examples=150, deadline=None)
@given(costs=cost_lists, base=bases,
       sums=st.dictionaries(st.tuples(st.sampled_from(["USD", "JPY", "KWD", "EUR"]),
                                      st.sampled_from(["meta", "google"])),
                            st.builds(Measures, st.integers(0, 10**10).map(lambda c: Decimal(c).scaleb(-2)),
                                      st.integers(0, 10**10).map(lambda c: Decimal(c).scaleb(-2))),
                            max_size=6))
def test_pnl_per_currency_matches_a_computation_from_the_rows(costs: list[Cost],
                                                              base: dict[tuple[date, str, str], Measures],
                                                              sums: dict[tuple[str, str], Measures]) -> None:
    allocated = allocate_for_period(costs, date(2024, 1, 1), date(2024, 1, 20), base)
    got = pnl(sums, allocated)
    assert set(got) == {c for c, _ in sums} | {s.currency for s in allocated}
    for currency, p in got.items():
        # gathered the other way round: every row once, by currency, in fractions
        revenue = sum((Fraction(m.revenue) for (c, _), m in sums.items() if c == currency), Fraction(0))
        platform = sum((Fraction(m.spend) for (c, _), m in sums.items() if c == currency), Fraction(0))
        mine = [(s, Fraction(v)) for s, v in allocated.items() if s.currency == currency]
        flagged = sum((v for s, v in mine if s.counts_as_ad_spend), Fraction(0))
        all_costs = sum((v for _, v in mine), Fraction(0))
        assert Fraction(p.revenue) == revenue
        assert Fraction(p.ad_spend) == platform + flagged
        assert Fraction(p.gross_profit) == revenue - platform - flagged
        assert Fraction(p.net_profit) == revenue - platform - all_costs
        assert p.net_roas == ratio_oracle(revenue, platform + flagged)
        assert p.mer == ratio_oracle(revenue, platform + all_costs)
        assert sum(p.spend_by_provider.values()) == platform
        assert Fraction(sum(p.ad_spend_costs.values()) + sum(p.other_costs.values())) == all_costs


def test_pnl_keeps_currencies_apart_and_says_none_for_ratios_over_nothing() -> None:
    d = date(2024, 5, 1)
    sums = {("USD", "meta"): Measures(Decimal("100.00"), Decimal("500.00")),
            ("JPY", "google"): Measures(Decimal(0), Decimal(3000))}
    allocated = {Slot(d, "USD", "agency", True): Decimal("50.00"), Slot(d, "USD", "cogs", False): Decimal("150.00"),
                 Slot(d, "JPY", "cogs", False): Decimal(1000)}
    got = pnl(sums, allocated)
    usd, jpy = got["USD"], got["JPY"]
    assert (usd.revenue, usd.ad_spend, usd.gross_profit, usd.net_profit) == (
        Decimal("500.00"), Decimal("150.00"), Decimal("350.00"), Decimal("200.00"))
    assert (usd.net_roas, usd.mer) == (Decimal("3.333333"), Decimal("1.666667"))
    assert (jpy.revenue, jpy.ad_spend, jpy.net_profit, jpy.net_roas, jpy.mer) == (
        Decimal(3000), Decimal(0), Decimal(2000), None, Decimal(3))
    credit = pnl({("EUR", "meta"): Measures(Decimal(10), Decimal(40))},
                 {Slot(d, "EUR", "credit", True): Decimal(-25)})["EUR"]
    assert credit.ad_spend == Decimal(-15) and credit.net_roas is None and credit.mer is None
