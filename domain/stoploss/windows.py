"""A rule's window over one target, from the watch: ``today`` (a lookup), the last N
account days (a few additions) or the last N hours (hourly deltas, while kept)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from datetime import date, datetime, timedelta
from decimal import Decimal

from domain.deltas import Applied
from domain.stoploss.state import WatchState
from domain.stoploss.targets import LEAF_LEVELS, Target
from schemas.metrics import NO_METRICS, Metrics
from schemas.rules import Rule


def hour_of(ts: datetime) -> int:
    return int(ts.timestamp()) // 3600


def sum_metrics(ms: Collection[Metrics]) -> Metrics:
    if len(ms) == 1:
        return next(iter(ms))  # immutable: no need for a copy
    spend = conversions = revenue = Decimal(0)
    impressions = clicks = 0
    for m in ms:
        spend += m.spend
        impressions += m.impressions
        clicks += m.clicks
        conversions += m.conversions
        revenue += m.revenue
    return Metrics(spend, impressions, clicks, conversions, revenue)


def _children(state: WatchState, t: Target) -> Callable[[str], bool]:
    if t.level == "campaign":
        return lambda _c: True
    if t.level == "adset":
        parents = state.parents
        return lambda c: c == t.target_id or parents.get(c) == t.target_id
    return lambda c: c == t.target_id


@functools.lru_cache(maxsize=256)
def _dates(today: date, n: int) -> tuple[date, ...]:
    last = today.toordinal()
    return tuple(date.fromordinal(o) for o in range(last - n + 1, last + 1))


def window_sums(state: WatchState, rule: Rule, t: Target, today: date, applied: Applied) -> Metrics | None:
    """The rule's window over one target; None when the watch cannot know it yet.  A
    one-day window is a lookup (an ad's own snapshot, or the running total of an ad set /
    campaign), a days window a few additions."""
    now = applied.snapshot.captured_at
    if rule.window == "hours":
        if state.hours_since is None or now - state.hours_since < timedelta(hours=rule.window_n):
            return None
        first_hour = hour_of(now) - rule.window_n
        if t.level in LEAF_LEVELS:
            per_child = [state.hours.get(t.target_id, {})]
        else:
            child = _children(state, t)
            per_child = [h for c, h in state.hours.items() if child(c)]
        return sum_metrics([m for h in per_child for k, m in h.items() if k > first_hour])
    if t.level in LEAF_LEVELS:
        if rule.window == "today":
            # A leaf target is the snapshot's own ad, and "today" rules only look at
            # snapshots of today: its window is the snapshot.
            s = applied.snapshot
            return s.metrics if s.report_date == today and s.entity_id == t.target_id else NO_METRICS
        days = state.days
        return sum_metrics([m for d in _dates(today, rule.window_n)
                     if (ch := days.get(d)) is not None and (m := ch.get(t.target_id)) is not None])
    per_day = state.totals.get(t.level + ":" + t.target_id)
    if not per_day:
        return NO_METRICS
    if rule.window == "today":
        return per_day.get(today) or NO_METRICS
    return sum_metrics([m for d in _dates(today, rule.window_n) if (m := per_day.get(d)) is not None])


def covers(rule: Rule, report_date: date, today: date) -> bool:
    """Does a change to ``report_date`` move this rule's window?"""
    if rule.window == "today":
        return report_date == today
    if rule.window == "hours":
        return True
    return 0 <= today.toordinal() - report_date.toordinal() < rule.window_n
