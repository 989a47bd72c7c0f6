"""Pure scheduling arithmetic: which report dates each loop reads, when it runs next,
and how a backfill is chunked.  Dates are the ad account's local days."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from ground.settings import HOT_YESTERDAY_HOURS

HOT_INTERVAL = timedelta(minutes=15)
WARM_INTERVAL = timedelta(hours=12)
HOT_JITTER = 0.2  # +-20 %: 1,000 accounts never fire in the same second
META_RESTATEMENT_DAYS = 28
GOOGLE_CONVERSION_WINDOW_DAYS = 30
BACKFILL_DAYS = 90
BACKFILL_CHUNK_DAYS = 7
MAX_BACKFILL_DAYS = 1100  # Meta keeps 37 months of insights; Google more, but a bound is a bound

Loop = Literal["hot", "warm", "backfill"]


@dataclass(frozen=True)
class Window:
    since: date
    until: date

    def __post_init__(self) -> None:
        if self.since > self.until:
            raise ValueError(f"empty window {self.since}..{self.until}")

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1


def local_today(now: datetime, tz: str) -> date:
    return now.astimezone(ZoneInfo(tz)).date()


def hot_window(now: datetime, tz: str, yesterday_hours: float = HOT_YESTERDAY_HOURS) -> Window:
    """Today so far, in the account's zone, and yesterday too during the first
    ``yesterday_hours`` after local midnight: the last minutes of yesterday (and any
    correction made after the last read before midnight) are settled by the platforms in
    the hours after it, and would otherwise wait for the warm loop (up to 12 hours)."""
    zone = ZoneInfo(tz)
    d = now.astimezone(zone).date()
    # Elapsed real time since local midnight (a DST change that day counts as it happened).
    midnight = datetime.combine(d, time(0), tzinfo=zone)
    since_midnight = now - midnight
    if since_midnight < timedelta(hours=yesterday_hours):
        return Window(d - timedelta(days=1), d)
    return Window(d, d)


def warm_window(now: datetime, tz: str, provider: str, days: int | None = None) -> Window:
    """The restatement window before today: Meta 28 days, Google the conversion window."""
    n = days if days is not None else (META_RESTATEMENT_DAYS if provider == "meta" else GOOGLE_CONVERSION_WINDOW_DAYS)
    if n < 1:
        raise ValueError("restatement window must be >= 1 day")
    today = local_today(now, tz)
    return Window(today - timedelta(days=n), today - timedelta(days=1))


def backfill_window(today: date, days: int = BACKFILL_DAYS) -> Window:
    """The ``days`` local days before ``today`` (today itself is the hot loop's)."""
    if not 1 <= days <= MAX_BACKFILL_DAYS:
        raise ValueError(f"backfill days must be between 1 and {MAX_BACKFILL_DAYS}")
    return Window(today - timedelta(days=days), today - timedelta(days=1))


def backfill_chunks(window: Window, chunk: int = BACKFILL_CHUNK_DAYS, done_through: date | None = None) -> list[Window]:
    """``window`` oldest first, ``chunk`` days each; resumes after ``done_through``."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1 day")
    start = window.since
    if done_through is not None:
        start = max(start, done_through + timedelta(days=1))
    out: list[Window] = []
    d = start
    end = window.until
    while d <= end:
        out.append(Window(d, min(end, d + timedelta(days=chunk - 1))))
        d += timedelta(days=chunk)
    return out


def next_run(now: datetime, loop: Literal["hot", "warm"], *, at_least_s: float = 0.0, factor: float = 1.0,
             r: float | None = None) -> datetime:
    """When this loop runs again: the interval (stretched by ``factor`` when the account's
    usage is high) with jitter, but never before the platform's own pause (``at_least_s``)."""
    base = (HOT_INTERVAL if loop == "hot" else WARM_INTERVAL) * max(1.0, factor)
    x = random.random() if r is None else r
    jittered = base * (1 - HOT_JITTER + 2 * HOT_JITTER * x)
    return now + max(jittered, timedelta(seconds=at_least_s))
