"""15-minute buckets of deltas, by capture time, closed at the report date's local end.

A delta belongs to the bucket its snapshot was captured in, except a restatement
(captured after its report date ended in the account's timezone): it is booked in the
*last* bucket of that report date.  So for every entity and report date, the intraday
buckets sum to the day's total, and an analyst summing buckets for a day gets exactly
what the platform reports for that day.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta

from schemas.insight import zone

BUCKET_SECONDS = 15 * 60
BUCKET = timedelta(seconds=BUCKET_SECONDS)


def floor_bucket(ts: datetime) -> datetime:
    """Start of the UTC-aligned 15-minute bucket holding ``ts``.

    Every timezone offset in use today is a multiple of 15 minutes, so UTC-aligned
    buckets are also local-aligned buckets in every account's zone.
    """
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % BUCKET_SECONDS, UTC)


@functools.lru_cache(maxsize=65536)
def day_bounds(report_date: date, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of an account-local day in UTC; 23 or 25 hours long across DST."""
    z = zone(tz)
    start = datetime.combine(report_date, time(0), z).astimezone(UTC)
    end = datetime.combine(report_date + timedelta(days=1), time(0), z).astimezone(UTC)
    return start, end


def last_bucket(report_date: date, tz: str) -> datetime:
    return day_bounds(report_date, tz)[1] - BUCKET


def bucket_for(captured_at: datetime, report_date: date, tz: str) -> datetime:
    """The bucket a delta captured at ``captured_at`` for ``report_date`` is booked in."""
    start, end = day_bounds(report_date, tz)
    if captured_at >= end:
        return end - BUCKET
    if captured_at < start:
        # Validation refuses snapshots for days that have not begun; keep the function
        # total anyway so the invariant (buckets inside their day) holds for any input.
        return start
    return floor_bucket(captured_at)


def local_date(ts: datetime, tz: str) -> date:
    return ts.astimezone(zone(tz)).date()
