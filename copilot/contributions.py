"""A KPI's change between two periods, split into per-group contributions that add up
exactly to the change shown.

Sums (spend, impressions, clicks, conversions, revenue): a group's contribution is its
own change; the parts add up exactly (decimal addition is exact).

Ratios (roas, cpa, cpc, ctr, cpm: ``scale * N / D`` from ``schemas.measures.RATIO_PARTS``,
the dashboard's definitions): with totals ``N0/D0`` before and ``N1/D1`` after and a
group's changes ``dn = n1 - n0``, ``dd = d1 - d0``, the group contributes

    c = scale * ( (dn - R0 * dd) / D1 + (dn - R1 * dd) / D0 ) / 2,   R0 = N0/D0, R1 = N1/D1

the mean of the two one-sided attributions (new denominator first, old first): a
symmetric two-factor split.  Each one-sided sum telescopes to ``R1 - R0``, so the
contributions add up to the exact change; a group that grew its numerator faster than
its denominator at the going ratio pushed the ratio up.  It needs both totals defined
(``D0`` and ``D1`` not zero); otherwise there is no decomposition and the reason says why.
Computed with exact fractions, then put on the dashboard's grid (``RATIO_DECIMALS``
decimals): the change is the difference of the two ratios *as shown* (each rounded half
away from zero), each contribution is rounded half away from zero, and the few units
the rounding leaves over go one by one to the groups that contributed at all, those
the rounding moved furthest the other way first (ties: the larger contribution, then
the order the groups came in) - so the parts still add up exactly to the change shown.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Final, Generic, TypeVar

from domain.kpis import RATIO_DECIMALS, Sums, ratio
from schemas.measures import MEASURES, RATIO_PARTS

K = TypeVar("K", bound=Hashable)
_UNIT: Final = Decimal(1).scaleb(-RATIO_DECIMALS)
_SCALE: Final = 10**RATIO_DECIMALS


@dataclass(frozen=True, slots=True)
class Contribution(Generic[K]):
    key: K
    previous: Decimal | int | None  # the group's own value (None: an undefined ratio)
    current: Decimal | int | None
    contribution: Decimal


@dataclass(frozen=True, slots=True)
class Decomposition(Generic[K]):
    metric: str
    previous: Decimal | int | None  # totals
    current: Decimal | int | None
    change: Decimal | None  # current - previous, as shown; None when undefined
    contributions: tuple[Contribution[K], ...]  # largest absolute contribution first
    reason: str | None = None  # why there is no decomposition


def _value(s: Sums, metric: str) -> Decimal | int | None:
    if metric in RATIO_PARTS:
        num, den, scale = RATIO_PARTS[metric]
        return ratio(getattr(s, num), getattr(s, den), scale)
    v: Decimal | int = getattr(s, metric)
    return v


def _total(groups: Mapping[K, Sums]) -> Sums:
    out = Sums()
    for s in groups.values():
        out = out + s
    return out


def _order(items: list[Contribution[K]]) -> tuple[Contribution[K], ...]:
    return tuple(sorted(items, key=lambda c: (-abs(c.contribution), repr(c.key))))


def decompose(metric: str, previous: Mapping[K, Sums], current: Mapping[K, Sums]) -> Decomposition[K]:
    """Per-group contributions to ``metric``'s change (a group missing from a period had
    nothing in it)."""
    if metric not in MEASURES and metric not in RATIO_PARTS:
        raise ValueError(f"unknown metric {metric!r}")
    keys = list(dict.fromkeys([*previous, *current]))
    zero = Sums()
    prev_t, cur_t = _total(previous), _total(current)
    p_total, c_total = _value(prev_t, metric), _value(cur_t, metric)

    def own(k: K) -> tuple[Decimal | int | None, Decimal | int | None]:
        return _value(previous.get(k, zero), metric), _value(current.get(k, zero), metric)

    if metric in MEASURES:
        items = []
        for k in keys:
            p, c = own(k)
            assert p is not None and c is not None
            items.append(Contribution(k, p, c, Decimal(c) - Decimal(p)))
        assert p_total is not None and c_total is not None
        return Decomposition(metric, p_total, c_total, Decimal(c_total) - Decimal(p_total), _order(items))

    num, den, scale = RATIO_PARTS[metric]
    n0, d0 = Fraction(getattr(prev_t, num)), Fraction(getattr(prev_t, den))
    n1, d1 = Fraction(getattr(cur_t, num)), Fraction(getattr(cur_t, den))
    if d0 == 0 or d1 == 0:
        which = "previous" if d0 == 0 else "current"
        return Decomposition(metric, p_total, c_total, None, (),
                             reason=f"{metric} is undefined in the {which} period ({den} is zero)")
    assert p_total is not None and c_total is not None
    r0, r1 = n0 / d0, n1 / d1
    exact: list[Fraction] = []
    for k in keys:
        gp, gc = previous.get(k, zero), current.get(k, zero)
        dn = Fraction(getattr(gc, num)) - Fraction(getattr(gp, num))
        dd = Fraction(getattr(gc, den)) - Fraction(getattr(gp, den))
        exact.append(scale * ((dn - r0 * dd) / d1 + (dn - r1 * dd) / d0) / 2)
    change = Decimal(c_total) - Decimal(p_total)
    units = _apportion([x * _SCALE for x in exact], int(change.scaleb(RATIO_DECIMALS)))
    items = [Contribution(k, *own(k), Decimal(u).scaleb(-RATIO_DECIMALS).quantize(_UNIT))
             for k, u in zip(keys, units, strict=True)]
    return Decomposition(metric, p_total, c_total, change.quantize(_UNIT), _order(items))


def _half_up(x: Fraction) -> int:
    """Round half away from zero, as ``domain.kpis.ratio`` does."""
    n, d = abs(x.numerator), x.denominator
    r = (2 * n + d) // (2 * d)
    return r if x >= 0 else -r


def _apportion(xs: list[Fraction], target: int) -> list[int]:
    """Integers near ``xs`` (rounded half away from zero) that add up to ``target``;
    the difference is spread one unit at a time, first to the values the rounding
    moved furthest the other way, deterministically."""
    base = [_half_up(x) for x in xs]
    left = target - sum(base)
    if not xs:
        if left:
            raise ValueError("nothing to apportion a non-zero change to")
        return base
    step = 1 if left > 0 else -1
    # groups that contributed at all first; among them the most under-rounded when
    # adding, the most over-rounded when taking away
    order = sorted(range(len(xs)), key=lambda i: (xs[i] == 0, -(xs[i] - base[i]) * step, -abs(xs[i]), i))
    i = 0
    while left != 0:
        base[order[i % len(order)]] += step
        left -= step
        i += 1
    return base


def top(d: Decomposition[K], limit: int, other: K) -> Decomposition[K]:
    """The ``limit`` largest contributions and one ``other`` holding the rest, so the
    parts shown still add up to the change."""
    if len(d.contributions) <= limit:
        return d
    kept, rest = d.contributions[:limit], d.contributions[limit:]
    lumped = Contribution(other, None, None, sum((c.contribution for c in rest), Decimal(0)))
    return Decomposition(d.metric, d.previous, d.current, d.change, (*kept, lumped), d.reason)
