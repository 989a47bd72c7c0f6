"""The measures every insight carries and the ratios derived from them, spelled once.

Only the five measures are stored anywhere; a ratio is ``scale * numerator / denominator``
of sums taken after aggregation (never an average of per-row ratios), and undefined
when the denominator is zero.  Used by the contracts (``schemas.metrics``,
``schemas.columns``), the KPI math (``domain.kpis``), stop-loss conditions and the API.
"""

from __future__ import annotations

from typing import Final

MEASURES: Final = ("spend", "impressions", "clicks", "conversions", "revenue")

# ratio -> (numerator, denominator, scale): ROAS = revenue/spend, CPA = spend/conversions,
# CPC = spend/clicks, CTR = clicks/impressions, CPM = 1000 * spend/impressions.
RATIO_PARTS: Final[dict[str, tuple[str, str, int]]] = {
    "roas": ("revenue", "spend", 1),
    "cpa": ("spend", "conversions", 1),
    "cpc": ("spend", "clicks", 1),
    "ctr": ("clicks", "impressions", 1),
    "cpm": ("spend", "impressions", 1000),
}
RATIOS: Final = tuple(RATIO_PARTS)
KPI_NAMES: Final = MEASURES + RATIOS
