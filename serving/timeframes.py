"""Dashboard timeframes -> inclusive report-date ranges, in the workspace's timezone.

Pure (no I/O): ``today`` is passed in, so tests pin the clock without patching.
Report dates are the ad accounts' local days (that is how platforms report), and a
workspace's "today" is its own local date; the range is applied to ``report_date``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Timeframe = Literal["today", "yesterday", "last_7_days", "last_30_days", "custom"]
Grain = Literal["15m", "hour", "day"]
TIMEFRAMES: Final = ("today", "yesterday", "last_7_days", "last_30_days", "custom")
MAX_RANGE_DAYS: Final = 400


class TimeframeError(ValueError):
    """An invalid timeframe request; the message is safe to show to the caller."""


@dataclass(frozen=True, slots=True)
class Period:
    """Inclusive range of report dates."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def local_today(now_utc: datetime, tz: str) -> date:
    """The calendar date in ``tz`` at the instant ``now_utc``."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TimeframeError(f"unknown timezone {tz!r}") from exc
    return now_utc.astimezone(zone).date()


def resolve(
    timeframe: Timeframe | None, start: date | None, end: date | None, today: date
) -> Period:
    """A named timeframe (ending today) or a custom ``from``/``to`` range; a custom
    range needs both ends, ``from <= to``, and at most MAX_RANGE_DAYS days."""
    if start is not None or end is not None:
        if timeframe not in (None, "custom"):
            raise TimeframeError("give either timeframe or from/to, not both")
        if start is None or end is None:
            raise TimeframeError("a custom range needs both 'from' and 'to'")
        if start > end:
            raise TimeframeError("'from' must not be after 'to'")
        p = Period(start, end)
        if p.days > MAX_RANGE_DAYS:
            raise TimeframeError(f"a range may span at most {MAX_RANGE_DAYS} days")
        return p
    if timeframe == "custom":
        raise TimeframeError("timeframe=custom needs 'from' and 'to'")
    if timeframe is None or timeframe == "today":
        return Period(today, today)
    if timeframe == "yesterday":
        y = today - timedelta(days=1)
        return Period(y, y)
    if timeframe == "last_7_days":
        return Period(today - timedelta(days=6), today)
    if timeframe == "last_30_days":
        return Period(today - timedelta(days=29), today)
    raise TimeframeError(f"unknown timeframe {timeframe!r}")


def previous(p: Period) -> Period:
    """The equal-length period immediately before ``p``."""
    end = p.start - timedelta(days=1)
    return Period(end - timedelta(days=p.days - 1), end)


def grain_for(p: Period) -> Grain:
    """15-minute buckets for one day, hourly up to 7 days, daily beyond."""
    if p.days == 1:
        return "15m"
    if p.days <= 7:
        return "hour"
    return "day"


def utc_now() -> datetime:
    return datetime.now(UTC)


# The days the pollers' hot loop still rewrites every few minutes: the workspace's today,
# and its yesterday (accounts west of the workspace are still in it, and a day's last
# polls land after midnight).  Older days change only when the restatement loop runs,
# about twice a day per account.
HOT_DAYS: Final = 2


def split_hot(p: Period, today: date, hot_days: int = HOT_DAYS) -> tuple[Period | None, Period | None]:
    """``p`` as (settled days, hot days): either may be None.  Reads over the settled
    part can be reused while its days' versions stand; the hot part is read each time."""
    hot_start = today - timedelta(days=hot_days - 1)
    if p.end < hot_start:
        return p, None
    if p.start >= hot_start:
        return None, p
    return Period(p.start, hot_start - timedelta(days=1)), Period(hot_start, p.end)
