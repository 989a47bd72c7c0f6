"""Backfill progress arithmetic and the command line's bar (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from domain.backfill_progress import BackfillProgress, bar

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SINCE, UNTIL = date(2026, 11, 1), date(2026, 11, 20)  # 20 days


def test_share_and_time_left_follow_this_runs_pace() -> None:
    fresh = BackfillProgress(SINCE, UNTIL, None, 0, NOW, SINCE)
    assert (fresh.done_days, fresh.pct, fresh.eta(NOW)) == (0, 0, None)  # no pace yet
    # 5 days in 10 minutes: 15 days left take 30 minutes.
    five = BackfillProgress(SINCE, UNTIL, date(2026, 11, 5), 50, NOW - timedelta(minutes=10), SINCE)
    assert (five.done_days, five.pct, five.eta(NOW)) == (5, 25, NOW + timedelta(minutes=30))
    # Resumed after day 10: only this run's 2 days (in 4 minutes) set the pace, 8 days left.
    resumed = BackfillProgress(SINCE, UNTIL, date(2026, 11, 12), 120, NOW - timedelta(minutes=4), date(2026, 11, 11))
    assert (resumed.pct, resumed.eta(NOW)) == (60, NOW + timedelta(minutes=16))
    done = BackfillProgress(SINCE, UNTIL, UNTIL, 200, NOW - timedelta(hours=1), SINCE)
    assert (done.pct, done.eta(NOW)) == (100, NOW)
    assert BackfillProgress(SINCE, UNTIL, date(2026, 11, 19), 1, None, None).pct == 95  # rounded down


def test_the_bar_names_days_rows_and_time_left() -> None:
    p = BackfillProgress(SINCE, UNTIL, date(2026, 11, 5), 1234, NOW - timedelta(seconds=100), SINCE)
    line = bar("meta:123", p, NOW, width=20)
    assert line == "backfill meta:123 [#####---------------]  25% 5/20 days 1234 rows ETA 0:05:00"
    assert bar("meta:123", BackfillProgress(SINCE, UNTIL, None, 0, NOW, SINCE), NOW).endswith("ETA ?")
