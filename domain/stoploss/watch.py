"""Stop-loss evaluation: per watched campaign, fold each applied snapshot into the
watch, then judge the rules in scope -> alert or not.

Pure (no I/O).  The dataflow keys one *watch* per campaign and calls :func:`watch` with
every applied snapshot of it, so evaluation happens on each new delta against state the
flow keeps (and Bytewax snapshots), never by polling the database.

Why each rule of the game (the verdict's own: :mod:`domain.stoploss.conditions`):
- firing needs delivery in the triggering delta (spend or impressions went up): a paused
  ad whose old numbers get restated never fires;
- a fired alert whose conditions later fail with guards still met (late conversions
  arrived) produces one ``recovered`` notice; an account-day change closes open alerts
  silently, because the window they were about is over;
- aggregate targets (ad set, campaign) sum the latest cumulative of each child ad; the
  watch only knows children it has seen since it started, so aggregate rules wait
  ``warmup`` (one full poll cycle) before their first verdict, and ``hours`` windows
  wait until the watch covers the whole window.

Replays are safe: the same snapshots in the same order (Kafka keeps per-key order)
produce the same fingerprints (``schemas.alerts``), and alert rows are inserted
``ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, timedelta

from domain.deltas import Applied
from domain.stoploss.conditions import check_of, guarded, observed
from domain.stoploss.state import Mark, WatchState
from domain.stoploss.targets import LEAF_LEVELS, Target, contributes_to, in_scope, targets_for
from domain.stoploss.windows import covers, hour_of, window_sums
from schemas.alerts import Alert
from schemas.metrics import Metrics
from schemas.rules import MAX_DAYS, MAX_HOURS, Rule

DEFAULT_WARMUP = timedelta(minutes=30)


def _fold(state: WatchState, applied: Applied, today: date, track_hours: bool, track_ad_days: bool) -> bool:
    """Fold the snapshot in; False when no window but an hours one moved (the ad-day was
    seen before and its delta is zero)."""
    s = applied.snapshot
    child = s.entity_id
    seen = state.seen.get(s.report_date)
    if seen is None:
        seen = state.seen[s.report_date] = set()
    if child in seen:
        change = applied.delta
        moved = bool(change.spend or change.impressions or change.clicks or change.conversions or change.revenue)
    else:
        seen.add(child)
        change = s.metrics  # its day enters the totals whole
        moved = True
    totals = state.totals
    for k in contributes_to(applied):
        per_day = totals.get(k)
        if per_day is None:
            per_day = totals[k] = {}
        prev = per_day.get(s.report_date)
        per_day[s.report_date] = change if prev is None else prev + change
    if track_ad_days:
        children = state.days.get(s.report_date)
        if children is None:
            children = state.days[s.report_date] = {}
        children[child] = s.metrics
    elif state.days:
        state.days.clear()
    if state.latest_day is None or today > state.latest_day:
        state.latest_day = today
        oldest = today - timedelta(days=MAX_DAYS)
        for d in [d for d in state.seen if d < oldest]:
            del state.seen[d]
            state.days.pop(d, None)
            for per_day in totals.values():
                per_day.pop(d, None)
    if not track_hours:
        if state.hours_since is not None:
            state.hours.clear()
            state.parents.clear()
            state.hours_since = None
        return moved
    if s.adset_id is not None:
        state.parents[child] = s.adset_id
    if state.hours_since is None:
        state.hours_since = s.captured_at
    h = hour_of(s.captured_at)
    hours = state.hours.get(child)
    if hours is None:
        hours = state.hours[child] = {}
    prev_h = hours.get(h)
    hours[h] = applied.delta if prev_h is None else prev_h + applied.delta
    if len(hours) > MAX_HOURS + 2:
        for old_hour in [x for x in hours if x <= h - MAX_HOURS - 1]:
            del hours[old_hour]
    return moved


def _fingerprint(rule: Rule, applied: Applied, t: Target, slot: str) -> str:
    s = applied.snapshot
    return f"{rule.id}|{s.provider}:{s.account_id}:{t.level}:{t.target_id}|{slot}|fired"


def _alert(rule: Rule, applied: Applied, t: Target, fingerprint: str, kind: str, today: date,
           sums: Metrics) -> Alert:
    s = applied.snapshot
    recovered = kind == "recovered"
    return Alert(
        fingerprint=fingerprint,
        kind=kind,
        workspace_id=s.workspace_id,
        rule_id=rule.id,
        rule_version=rule.version,
        rule_name=rule.name,
        conditions=rule.describe(),
        window=rule.window_label,
        provider=s.provider,
        account_id=s.account_id,
        entity_level=t.level,
        entity_id=t.target_id,
        campaign_id=s.campaign_id,
        adset_id=s.adset_id if t.level in ("ad", "adset") else None,
        report_date=today,
        timezone=s.timezone,
        currency=s.currency,
        captured_at=s.captured_at,
        observed=tuple(observed(sums).items()),
        notify=rule.notify if (not recovered or rule.notify_recovery) else (),
        pause=rule.pause and not recovered,
        pause_dry_run=rule.pause_dry_run,
        resume=recovered and rule.pause and rule.resume_on_recovery,
    )

_UNKNOWN = Metrics()  # a cache miss (compared by identity)
WindowCache = dict[str, Metrics | None]  # window label -> its sums, for one target


def evaluate(state: WatchState, rule: Rule, applied: Applied, t: Target, today: date,
             cache: WindowCache) -> Alert | None:
    """One rule on one target after ``applied`` was folded in: fire, recover or nothing.
    ``cache`` shares window sums between the target's rules."""
    s = applied.snapshot
    marks = state.marks.get(t.target_id)  # created on the target's first firing only
    mark = marks.get(rule.id) if marks is not None else None
    if mark is not None and mark.open_alert is not None and mark.open_day != today:
        mark.open_alert = None  # the day it was about is over: close silently
    if rule.window == "today":
        if s.report_date != today:
            return None
    elif not covers(rule, s.report_date, today):
        return None
    label = rule.window_label
    sums = cache.get(label, _UNKNOWN)
    if sums is _UNKNOWN:
        sums = cache[label] = window_sums(state, rule, t, today, applied)
    if sums is None or not guarded(rule, sums):
        return None
    if not check_of(rule.conditions)(sums):
        if mark is None or mark.open_alert is None:
            return None
        fingerprint = mark.open_alert.removesuffix("|fired") + "|recovered"
        mark.open_alert = None
        return _alert(rule, applied, t, fingerprint, "recovered", today, sums)
    d = applied.delta
    if not (d.spend > 0 or d.impressions > 0):
        return None  # no delivery in this delta: restated numbers of a paused entity
    if mark is None:
        if marks is None:
            marks = state.marks[t.target_id] = {}
        mark = marks[rule.id] = Mark()
    if rule.trigger == "once_per_day":
        if mark.fired_day == today:
            return None
        slot = today.isoformat()
    else:
        if (
            rule.trigger == "cooldown"
            and mark.last_fired_at is not None
            and rule.cooldown_minutes is not None
            and s.captured_at - mark.last_fired_at < timedelta(minutes=rule.cooldown_minutes)
        ):
            return None
        slot = s.captured_at.isoformat().replace("+00:00", "Z")
    fingerprint = _fingerprint(rule, applied, t, slot)
    mark.fired_day, mark.last_fired_at = today, s.captured_at
    mark.open_alert, mark.open_day = fingerprint, today
    return _alert(rule, applied, t, fingerprint, "fired", today, sums)


def watch(
    state: WatchState | None,
    applied: Applied,
    rules: Mapping[str, tuple[Rule, ...]],
    name_of: Callable[[str], str | None] = lambda _: None,
    warmup: timedelta = DEFAULT_WARMUP,
    track_hours: bool = True,
    track_ad_days: bool = True,
) -> tuple[WatchState, list[Alert]]:
    """Fold one applied snapshot into its campaign's watch, then evaluate the rules in
    scope (``rules``: by level) on the ad, ad set and campaign it belongs to.  Mutates
    and returns ``state``."""
    s = applied.snapshot
    if state is None:
        state = WatchState(since=s.captured_at)
    today = applied.local_day
    if not _fold(state, applied, today, track_hours, track_ad_days) and not track_hours:
        # Nothing moved (a poll without news of an ad-day already counted): every window
        # is what the last evaluation saw, so nothing can fire (no delivery) or recover
        # (already judged).  Hours windows slide with time: always judged.
        return state, []
    alerts = []
    warming = s.captured_at - state.since < warmup
    for t in targets_for(applied, rules):
        if warming and t.level not in LEAF_LEVELS:
            continue  # an aggregate is not known until each of its ads has reported
        cache: WindowCache = {}
        for rule in rules[t.level]:
            # ``rules`` come from the book's per-account index: only the other filters
            # are left to check, and most rules have none.
            if not rule.filtered or in_scope(rule, applied, t, name_of):
                alert = evaluate(state, rule, applied, t, today, cache)
                if alert is not None:
                    alerts.append(alert)
    return state, alerts


def forget_rules(state: WatchState, live: set[str]) -> None:
    """Drop the marks of rules that were deleted or paused."""
    for target in list(state.marks):
        marks = state.marks[target]
        for rid in [r for r in marks if r not in live]:
            del marks[rid]
        if not marks:
            del state.marks[target]
