"""The five additive measures every insight carries.

Only sums are stored anywhere; ratios (ROAS, CPA, ...) are derived after aggregation
by ``domain.kpis`` so that they are never averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass(slots=True)
class Metrics:
    """Treated as immutable (never assigned after construction); not ``frozen`` only
    because frozen dataclasses are ~3x slower to build, and we build millions."""

    spend: Decimal = ZERO
    impressions: int = 0
    clicks: int = 0
    conversions: Decimal = ZERO
    revenue: Decimal = ZERO

    def __add__(self, other: Metrics) -> Metrics:
        return Metrics(
            self.spend + other.spend,
            self.impressions + other.impressions,
            self.clicks + other.clicks,
            self.conversions + other.conversions,
            self.revenue + other.revenue,
        )

    def __sub__(self, other: Metrics) -> Metrics:
        return Metrics(
            self.spend - other.spend,
            self.impressions - other.impressions,
            self.clicks - other.clicks,
            self.conversions - other.conversions,
            self.revenue - other.revenue,
        )

    def is_zero(self) -> bool:
        return not (self.spend or self.impressions or self.clicks or self.conversions or self.revenue)

    def as_tuple(self) -> tuple[Decimal, int, int, Decimal, Decimal]:
        return (self.spend, self.impressions, self.clicks, self.conversions, self.revenue)


NO_METRICS = Metrics()
