"""The intraday delivery curve: what an ad has cumulatively delivered at a moment of its
account-local day.

Kept apart from the stream machinery because it is the one piece every consumer needs
on its own: the stream calls it per snapshot, tests and benchmark oracles call it to
know what any ad reports for any day without replaying a stream.

Per-(ad, day) randomness is a splitmix64 hash of (seed, ad salt, day) rather than a
``random.Random``: it must be addressable directly (any ad, any past day), and seeding a
Mersenne Twister per key would cost ~10 us.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from domain.sim.world import Ad
from schemas.insight import zone
from schemas.metrics import Metrics

# (spend cents, impressions, clicks, conversions in hundredths, revenue cents)
Vals = tuple[int, int, int, int, int]

_TWO_PI = 2.0 * math.pi
_sin = math.sin
_M64 = (1 << 64) - 1
_EPS = 1e-7  # absorbs float error so 83.45 * 100 floors to 8345, not 8344
_CENT = Decimal("0.01")


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _units(seed: int, salt: int, ordinal: int, n: int) -> list[float]:
    """``n`` uniform [0, 1) floats addressed by (seed, salt, ordinal)."""
    h = _splitmix(_splitmix(_splitmix(seed & _M64) ^ salt) ^ ordinal)
    out = []
    for _ in range(n):
        h = _splitmix(h)
        out.append((h >> 11) * (1.0 / (1 << 53)))
    return out


# Precomputed curve of one ad on one local day (see :func:`day_params`):
# (scale, full, a1, p1, s1, k_imps, ctr, cvr100, aov)
DayParams = tuple[float, float, float, float, float, float, float, float, float]


def day_params(ad: Ad, seed: int, day: date) -> DayParams:
    """The delivery curve of one ad on one local day, as floats for :func:`values_at`.

    Cumulative share of the day's demand at day fraction ``r`` is
    ``F(r) = r + a1 * (sin(2 pi r + p1) - sin p1)``, so ``F(0) = 0``, ``F(1) = 1`` and
    ``F'(r) = 1 + amplitude * cos(2 pi r + p1) >= 1 - amplitude > 0``: strictly
    increasing.  Spend is ``min(budget, budget * demand * F(r))``.  Demand, amplitude
    and peak hour vary a little by day, so no two days look identical.
    """
    u_demand, u_amp, u_peak = _units(seed, ad.salt, day.toordinal(), 3)
    curve = ad.curve
    budget = float(ad.daily_budget)
    scale = budget * curve.demand * (0.8 + 0.35 * u_demand)  # some days sell better
    amplitude = min(0.9, curve.amplitude * (0.85 + 0.3 * u_amp))
    p1 = -_TWO_PI * (curve.peak_hour + 2.0 * u_peak - 1.0) / 24.0
    return (
        scale,
        min(budget, scale),
        amplitude / _TWO_PI,
        p1,
        math.sin(p1),
        1000.0 / float(ad.cpm),
        ad.ctr,
        ad.cvr * 100.0,
        float(ad.aov),
    )


def values_at(p: DayParams, x: float) -> Vals:
    """Cumulative values after ``x`` days of delivery (``x > 1`` only with speedup).

    Every value is a floor of a non-decreasing function of ``x``, hence monotone; clicks
    are a fraction (< 1) of impressions, hence never above them.  This is the hot path
    (once per snapshot): keep it branch-light.
    """
    scale, full, a1, p1, s1, k_imps, ctr, cvr100, aov = p
    if x < 1.0:
        sp = scale * (x + a1 * (_sin(_TWO_PI * x + p1) - s1)) if x > 0.0 else 0.0
        # The budget cap, and float error at the very end of the day.  (A comparison,
        # not min(): this line runs once per snapshot.)
        if sp > full:
            sp = full
    else:
        n = int(x)
        r = x - n
        part = scale * (r + a1 * (_sin(_TWO_PI * r + p1) - s1)) if r > 0.0 else 0.0
        sp = n * full + min(part, full)
    imps = int(sp * k_imps + _EPS)  # int() truncates: float dust below 0 becomes 0
    clicks = int(imps * ctr)
    conv = int(clicks * cvr100)
    return (int(sp * 100.0 + _EPS), imps, clicks, conv, int(conv * aov + _EPS))


def _dec2(hundredths: int) -> Decimal:
    return Decimal(hundredths) * _CENT  # exact, and keeps two decimals ("1.00")


def to_metrics(v: Vals) -> Metrics:
    return Metrics(_dec2(v[0]), v[1], v[2], _dec2(v[3]), _dec2(v[4]))


def cumulative(
    ad: Ad, report_date: date, local_time_fraction: float, seed: int = 0, *, speedup: float = 1.0
) -> Metrics:
    """What the platform reports for ``ad`` on ``report_date`` once ``local_time_fraction``
    of that local day has passed (0 = midnight, 1 = the full day).

    ``speedup`` compresses the delivery day (a live demo polled every few seconds must
    visibly move): the day then holds ``speedup`` back-to-back delivery cycles.
    """
    if not 0.0 <= local_time_fraction <= 1.0:
        raise ValueError(f"local_time_fraction must be within [0, 1], got {local_time_fraction}")
    return to_metrics(values_at(day_params(ad, seed, report_date), local_time_fraction * speedup))


@functools.lru_cache(maxsize=8192)
def day_bounds(tz: str, day: date) -> tuple[float, float]:
    """(UTC epoch seconds of local midnight, length of the local day in seconds)."""
    z = zone(tz)
    start = datetime.combine(day, time(0), tzinfo=z).timestamp()
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=z).timestamp()
    return start, end - start


def local_day(t: datetime, tz: str) -> tuple[date, float]:
    """(account-local date of instant ``t``, fraction of that local day elapsed).

    The fraction is of the *real* day length, so a 23-hour DST day still runs 0 -> 1.
    """
    d = t.astimezone(zone(tz)).date()
    start, length = day_bounds(tz, d)
    return d, (t.timestamp() - start) / length


def utc_ms(t: datetime) -> datetime:
    """``t`` in UTC, truncated to the millisecond (the precision captured_at carries)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("times must be timezone-aware")
    t = t.astimezone(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)
