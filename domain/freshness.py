"""One line saying how fresh a connection's reads of today are, and why (pure).

``connections status`` (and the connection view after it) shows it, so a slowed or
stopped account is visible with its reason instead of being discovered from stale
numbers: ``on time: next read in 12 min``, ``degraded: next read in 18 min because usage
96 %``, ``throttled: next read in 25 min``, ``error: retry in 5 min``, ``stopped: needs
re-authorisation``.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def _minutes(td: timedelta) -> int:
    """Whole minutes, rounded up (never "in 0 min" for a read still ahead)."""
    return max(0, -(-td // timedelta(minutes=1)))


def freshness(status: str, hot_next_run_at: datetime | None, throttled_until: datetime | None,
              pacing_note: str | None, now: datetime) -> str:
    if status == "needs_reauth":
        return "stopped: needs re-authorisation (reconnect the account)"
    times = [t for t in (hot_next_run_at, throttled_until) if t is not None]
    nxt = max(times) if times else now
    n = _minutes(nxt - now)
    if status == "throttled" and throttled_until is not None and throttled_until > now:
        return f"throttled: next read in {n} min"
    if status == "error":
        return f"error: retry in {n} min"
    if pacing_note:
        return f"degraded: next read in {n} min because {pacing_note}"
    return f"on time: next read in {n} min"
