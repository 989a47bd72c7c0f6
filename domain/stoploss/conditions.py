"""The verdict of one rule over one set of sums: its conditions compiled once into a
function, its minimum-data guards, and what it observed (also the API's dry run).

Why each rule of the game:
- ratios are ratios of sums, and an undefined ratio (zero denominator) satisfies no
  condition (``ROAS < 1`` must not fire for an ad that spent nothing);
- a ratio is compared as reported (rounded to ``RATIO_DECIMALS``), decided by exact
  products unless it lies within a rounding step of the threshold;
- guards (minimum spend / impressions / clicks) gate both firing and recovering, so thin
  data decides nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from domain.kpis import RATIO_DECIMALS, Sums, kpis, ratio
from schemas.measures import RATIO_PARTS
from schemas.metrics import Metrics
from schemas.rules import Condition, Group, Rule


def observed(sums: Sums | Metrics) -> dict[str, Decimal | int | None]:
    """Every measure and ratio of a window, as an alert or a dry run shows them."""
    return kpis(Sums(sums.spend, sums.impressions, sums.clicks, sums.conversions, sums.revenue))


@dataclass(frozen=True, slots=True)
class Verdict:
    guarded: bool  # the minimum-data guards are met
    matched: bool  # guarded and the conditions hold
    observed: dict[str, Decimal | int | None]

Check = Callable[[Sums | Metrics], bool]
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq, "!=": operator.ne,
}


def _compile_condition(c: Condition) -> Check:
    compare, value = _OPERATORS[c.operator], c.value
    parts = RATIO_PARTS.get(c.metric)
    if parts is None:
        get = operator.attrgetter(c.metric)
        return lambda s: compare(get(s), value)
    num, den, scale = operator.attrgetter(parts[0]), operator.attrgetter(parts[1]), parts[2]

    def check_ratio(s: Sums | Metrics) -> bool:
        d = den(s)
        if d == 0:  # undefined ratio: satisfies nothing, not even "!="
            return False
        n = num(s) * scale
        if d > 0:
            # The ratio is compared as reported (rounded to RATIO_DECIMALS), but a
            # division and a rounding per check add up on the hot path: away from the
            # threshold by more than the rounding can move it, the exact products decide.
            gap = n - value * d
            if abs(gap) > _ROUNDING_MARGIN * d:
                return compare(gap, 0)
        return compare(ratio(n, d), value)

    return check_ratio

_ROUNDING_MARGIN = Decimal(1).scaleb(-RATIO_DECIMALS)  # > the half unit rounding moves a ratio


def compile_group(g: Group) -> Check:
    """The group as one function of the window's sums: what :func:`holds` means, without
    walking the tree (an ``and`` stops at the first False, an ``or`` at the first True)."""
    checks = tuple(compile_group(c) if isinstance(c, Group) else _compile_condition(c) for c in g.conditions)
    if len(checks) == 1:
        return checks[0]
    if g.op == "or":
        return lambda s: any(check(s) for check in checks)
    return lambda s: all(check(s) for check in checks)

# Compiled groups by identity; the entry keeps its group alive, so an id is never reused
# while cached.  Rules are few and change rarely; the cap only bounds a long-lived process.
_COMPILED: dict[int, tuple[Group, Check]] = {}
_MAX_COMPILED = 50_000


def check_of(g: Group) -> Check:
    hit = _COMPILED.get(id(g))
    if hit is not None and hit[0] is g:
        return hit[1]
    if len(_COMPILED) >= _MAX_COMPILED:
        _COMPILED.clear()
    check = compile_group(g)
    _COMPILED[id(g)] = (g, check)
    return check


def holds(g: Group, sums: Sums | Metrics) -> bool:
    return check_of(g)(sums)


def guarded(rule: Rule, sums: Sums | Metrics) -> bool:
    return (
        (rule.min_spend is None or sums.spend >= rule.min_spend)
        and (rule.min_impressions is None or sums.impressions >= rule.min_impressions)
        and (rule.min_clicks is None or sums.clicks >= rule.min_clicks)
    )


def judge(rule: Rule, sums: Sums) -> Verdict:
    ok = guarded(rule, sums)
    return Verdict(ok, ok and holds(rule.conditions, sums), observed(sums))
