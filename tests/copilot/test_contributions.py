"""Contributions add up exactly to the change shown; the change itself is checked
against totals computed here, apart from the code under test."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copilot.contributions import decompose, top
from domain.kpis import Sums

METRICS = ("spend", "impressions", "clicks", "conversions", "revenue", "roas", "cpa", "cpc", "ctr", "cpm")
# metric -> (numerator, denominator, scale), written out again here
PARTS = {"roas": ("revenue", "spend", 1), "cpa": ("spend", "conversions", 1), "cpc": ("spend", "clicks", 1),
         "ctr": ("clicks", "impressions", 1), "cpm": ("spend", "impressions", 1000)}

money = st.integers(min_value=0, max_value=10**9).map(lambda c: Decimal(c).scaleb(-2))
count = st.integers(min_value=0, max_value=10**8)
convs = st.integers(min_value=0, max_value=10**6).map(lambda c: Decimal(c).scaleb(-2))
sums = st.builds(Sums, money, count, count, convs, money)
groups = st.dictionaries(st.sampled_from("abcdefgh"), sums, max_size=8)


def shown(groups_: dict[str, Sums], metric: str) -> Decimal | None:
    """The dashboard's figure, computed directly from the groups."""
    total = {f: sum((getattr(s, f) for s in groups_.values()), Decimal(0))
             for f in ("spend", "impressions", "clicks", "conversions", "revenue")}
    if metric not in PARTS:
        return total[metric]
    num, den, scale = PARTS[metric]
    if total[den] == 0:
        return None
    with localcontext() as ctx:
        ctx.prec = 60
        return (scale * total[num] / total[den]).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


@settings(max_examples=300, deadline=None)
@given(metric=st.sampled_from(METRICS), prev=groups, cur=groups)
def test_contributions_add_up_exactly_to_the_change(metric: str, prev: dict[str, Sums], cur: dict[str, Sums]) -> None:
    d = decompose(metric, prev, cur)
    p, c = shown(prev, metric), shown(cur, metric)
    assert (d.previous, d.current) == (p, c)
    if p is None or c is None:
        assert d.change is None and d.contributions == () and d.reason
        return
    assert d.change == c - p
    assert sum((x.contribution for x in d.contributions), Decimal(0)) == d.change
    assert {x.key for x in d.contributions} == set(prev) | set(cur)
    lumped = top(d, 2, "other")
    assert sum((x.contribution for x in lumped.contributions), Decimal(0)) == d.change


@settings(max_examples=200, deadline=None)
@given(metric=st.sampled_from(METRICS), base=groups.filter(bool), changed=sums, who=st.sampled_from("abcdefgh"))
def test_a_single_changed_group_carries_the_whole_change(metric: str, base: dict[str, Sums], changed: Sums,
                                                         who: str) -> None:
    cur = {**base, who: changed}
    d = decompose(metric, base, cur)
    if d.change is None:
        return
    for x in d.contributions:
        assert x.contribution == (d.change if x.key == who else 0), x


def test_a_mix_shift_by_hand() -> None:
    """ROAS flat at 1.5: A improved (+0.375), B scaled up at a lower ROAS (-0.375)."""
    prev = {"A": Sums(spend=Decimal(100), revenue=Decimal(200)), "B": Sums(spend=Decimal(100), revenue=Decimal(100))}
    cur = {"A": Sums(spend=Decimal(100), revenue=Decimal(300)), "B": Sums(spend=Decimal(300), revenue=Decimal(300))}
    d = decompose("roas", prev, cur)
    assert (d.previous, d.current, d.change) == (Decimal("1.5"), Decimal("1.5"), Decimal("0"))
    assert [(x.key, x.contribution) for x in d.contributions] == [("A", Decimal("0.375")), ("B", Decimal("-0.375"))]
    assert [(x.previous, x.current) for x in d.contributions] == [(Decimal(2), Decimal(3)), (Decimal(1), Decimal(1))]


def test_sums_split_into_each_groups_own_change() -> None:
    d = decompose("spend", {"A": Sums(spend=Decimal("10.50"))}, {"A": Sums(spend=Decimal("4")),
                                                                  "B": Sums(spend=Decimal("1.25"))})
    assert d.change == Decimal("-5.25")
    assert [(x.key, x.contribution) for x in d.contributions] == [("A", Decimal("-6.50")), ("B", Decimal("1.25"))]


def test_an_undefined_total_has_no_decomposition() -> None:
    d = decompose("cpa", {"A": Sums(spend=Decimal(5))}, {"A": Sums(spend=Decimal(5), conversions=Decimal(1))})
    assert d.change is None and "previous" in (d.reason or "")
    with pytest.raises(ValueError):
        decompose("profit", {}, {})
