"""Backfill progress: share of the range read, the time left, and the command line's bar.

Pure: the stored columns in, numbers and text out.  The time left is estimated from the
current run's own pace (days read since it started), so a run resumed after a stop is
not credited with the days an earlier run read, nor charged for the hours in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta


@dataclass(frozen=True)
class BackfillProgress:
    since: date
    until: date
    done_through: date | None
    rows: int
    run_started_at: datetime | None = None
    run_from: date | None = None  # first day the current run reads

    @property
    def total_days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def done_days(self) -> int:
        if self.done_through is None or self.done_through < self.since:
            return 0
        return min(self.total_days, (self.done_through - self.since).days + 1)

    @property
    def pct(self) -> int:
        """Whole percent, rounded down: 100 only when every day is read."""
        return self.done_days * 100 // self.total_days

    def eta(self, now: datetime) -> datetime | None:
        """When the range should be read through, at this run's pace so far; None before
        the run has read a day (no pace yet) or when there is no run."""
        if self.done_days >= self.total_days:
            return now
        if self.run_started_at is None or self.run_from is None or self.done_through is None:
            return None
        run_days = (self.done_through - self.run_from).days + 1
        if run_days <= 0:
            return None
        return now + (now - self.run_started_at) * (self.total_days - self.done_days) / run_days


def _clock(td: timedelta) -> str:
    s = max(0, int(td.total_seconds()))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def bar(label: str, p: BackfillProgress, now: datetime, width: int = 24) -> str:
    """``backfill meta:123 [#########---------------]  37% 7/19 days 1234 rows ETA 0:01:10``."""
    filled = width * p.done_days // p.total_days
    eta = p.eta(now)
    left = "?" if eta is None else _clock(eta - now)
    return (f"backfill {label} [{'#' * filled}{'-' * (width - filled)}] {p.pct:3d}% "
            f"{p.done_days}/{p.total_days} days {p.rows} rows ETA {left}")
