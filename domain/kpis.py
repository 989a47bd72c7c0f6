"""KPI math shared by the dashboard, analytics and (later) stop-loss rules.

Ratios are computed from *sums after aggregation* (never averaged per row), and a zero
denominator gives ``None``: an undefined ratio is not 0 (ROAS 0 with zero spend would
make "ROAS < 1" true for every paused ad).  Pure: no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, TypeVar

from schemas.measures import RATIO_PARTS

# Ratios are reported with this many decimals, rounded half away from zero, which is what
# PostgreSQL's ``round(numeric, 6)`` does: an analyst can reproduce them exactly.
RATIO_DECIMALS: Final = 6
_QUANT: Final = Decimal(1).scaleb(-RATIO_DECIMALS)



@dataclass(frozen=True, slots=True)
class Sums:
    """Sums of the stored measures over any set of rows (one currency)."""

    spend: Decimal = Decimal(0)
    impressions: int = 0
    clicks: int = 0
    conversions: Decimal = Decimal(0)
    revenue: Decimal = Decimal(0)

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.spend + other.spend,
            self.impressions + other.impressions,
            self.clicks + other.clicks,
            self.conversions + other.conversions,
            self.revenue + other.revenue,
        )


def ratio(numerator: Decimal | int, denominator: Decimal | int, scale: int = 1) -> Decimal | None:
    """``scale * numerator / denominator`` rounded to RATIO_DECIMALS; None if the
    denominator is zero."""
    if denominator == 0:
        return None
    return (Decimal(scale) * Decimal(numerator) / Decimal(denominator)).quantize(
        _QUANT, rounding=ROUND_HALF_UP
    )


def ratio_of(s: object, name: str) -> Decimal | None:
    """One ratio of anything carrying the five measures as attributes."""
    num, den, scale = RATIO_PARTS[name]
    return ratio(getattr(s, num), getattr(s, den), scale)


def ratios(s: Sums) -> dict[str, Decimal | None]:
    return {name: ratio_of(s, name) for name in RATIO_PARTS}


def kpis(s: Sums) -> dict[str, Decimal | int | None]:
    """All measures and ratios by their column names."""
    out: dict[str, Decimal | int | None] = {
        "spend": s.spend,
        "impressions": s.impressions,
        "clicks": s.clicks,
        "conversions": s.conversions,
        "revenue": s.revenue,
    }
    out.update(ratios(s))
    return out


def change(current: Decimal | int | None, previous: Decimal | int | None) -> Decimal | None:
    """Relative change ``(current - previous) / previous``; None when either side is
    undefined or the previous value is zero (growth from nothing has no ratio)."""
    if current is None or previous is None:
        return None
    return ratio(Decimal(current) - Decimal(previous), previous)


K = TypeVar("K", bound=tuple[str, ...])


def accumulate(into: dict[K, Sums], more: Mapping[K, Sums]) -> None:
    """Add ``more``'s sums into ``into``, key by key."""
    for key, s in more.items():
        have = into.get(key)
        into[key] = s if have is None else have + s


def add_sums(base: Mapping[K, Sums], more: Mapping[K, Sums]) -> dict[K, Sums]:
    """Per-key sums of two sets of rows (e.g. two date ranges read apart); ``base`` is
    left as it was (it may be a cached read)."""
    out = dict(base)
    accumulate(out, more)
    return out


def top_by_spend(sums: Mapping[K, Sums], limit: int) -> list[tuple[K, Sums]]:
    """The ``limit`` largest spenders, ties in key order (code points), so the ranking
    does not depend on how the sums were put together."""
    return heapq.nsmallest(limit, sums.items(), key=lambda kv: (-kv[1].spend, kv[0]))
