"""The status line on how fresh a connection's reads of today are (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.freshness import freshness

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_each_state_says_when_the_next_read_is_and_why() -> None:
    later = NOW + timedelta(minutes=17, seconds=10)
    assert freshness("active", later, None, None, NOW) == "on time: next read in 18 min"
    assert freshness("active", later, None, "usage 96 %", NOW) == "degraded: next read in 18 min because usage 96 %"
    assert freshness("throttled", NOW - timedelta(minutes=1), NOW + timedelta(minutes=30), None, NOW) == (
        "throttled: next read in 30 min")
    assert freshness("error", NOW, NOW + timedelta(minutes=5), None, NOW) == "error: retry in 5 min"
    assert freshness("needs_reauth", later, None, None, NOW).startswith("stopped: needs re-authorisation")
    assert freshness("active", NOW - timedelta(hours=1), None, None, NOW) == "on time: next read in 0 min"  # due
