"""Pure scheduling: local-day windows, backfill chunks, jittered next runs."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from domain.schedule import Window, backfill_chunks, backfill_window, hot_window, next_run, warm_window


def test_hot_window_is_the_accounts_local_today() -> None:
    now = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)  # 22:00 on the 25th in New York, 12:00 on the 26th in Tokyo
    assert hot_window(now, "America/New_York") == Window(date(2026, 11, 25), date(2026, 11, 25))
    assert hot_window(now, "Asia/Tokyo") == Window(date(2026, 11, 26), date(2026, 11, 26))


def test_hot_window_keeps_yesterday_for_the_first_hours_after_local_midnight() -> None:
    ny = "America/New_York"  # UTC-5 in November

    def at(h: int, m: int) -> datetime:
        return datetime(2026, 11, 25, 5, 0, tzinfo=UTC) + timedelta(hours=h, minutes=m)

    both, today = Window(date(2026, 11, 24), date(2026, 11, 25)), Window(date(2026, 11, 25), date(2026, 11, 25))
    assert hot_window(at(0, 0), ny) == both
    assert hot_window(at(2, 59), ny) == both
    assert hot_window(at(3, 0), ny) == today
    assert hot_window(at(0, 30), ny, yesterday_hours=0) == today
    assert hot_window(at(5, 0), ny, yesterday_hours=6) == both
    # The night clocks go back (1 November 2026): midnight is 04:00 UTC, 3 h later 07:00 UTC.
    assert hot_window(datetime(2026, 11, 1, 6, 59, tzinfo=UTC), ny).since == date(2026, 10, 31)
    assert hot_window(datetime(2026, 11, 1, 7, 0, tzinfo=UTC), ny).since == date(2026, 11, 1)


def test_warm_window_covers_the_restatement_window_before_today() -> None:
    now = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    meta = warm_window(now, "Europe/Berlin", "meta")
    assert (meta.since, meta.until, meta.days) == (date(2026, 10, 28), date(2026, 11, 24), 28)
    assert warm_window(now, "Europe/Berlin", "google").days == 30
    assert warm_window(now, "Europe/Berlin", "google", days=14).since == date(2026, 11, 11)
    with pytest.raises(ValueError):
        warm_window(now, "Europe/Berlin", "google", days=0)


def test_backfill_chunks_cover_90_days_once_and_resume() -> None:
    today = date(2026, 11, 25)
    window = backfill_window(today)
    chunks = backfill_chunks(window)
    assert chunks[0].since == today - timedelta(days=90) and chunks[-1].until == today - timedelta(days=1)
    assert sum(c.days for c in chunks) == 90 and all(c.days <= 7 for c in chunks)
    assert all(b.since == a.until + timedelta(days=1) for a, b in itertools.pairwise(chunks))
    rest = backfill_chunks(window, done_through=chunks[5].until)
    assert rest == chunks[6:]
    assert backfill_chunks(window, done_through=today - timedelta(days=1)) == []
    assert backfill_window(today, 1) == Window(today - timedelta(days=1), today - timedelta(days=1))
    for bad in (0, -3, 1101):
        with pytest.raises(ValueError):
            backfill_window(today, bad)


def test_next_run_jitters_around_the_interval_and_respects_pauses() -> None:
    now = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    assert next_run(now, "hot", r=0.0) == now + timedelta(minutes=12)
    assert next_run(now, "hot", r=0.5) == now + timedelta(minutes=15)
    assert next_run(now, "hot", r=0.0, at_least_s=3600) == now + timedelta(hours=1)
    assert next_run(now, "warm", r=0.5) == now + timedelta(hours=12)


def test_next_run_stretches_by_factor() -> None:
    now = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    assert next_run(now, "hot", r=0.5, factor=2.5) == now + timedelta(minutes=37, seconds=30)
    assert next_run(now, "hot", r=0.5, factor=0.1) == now + timedelta(minutes=15)
