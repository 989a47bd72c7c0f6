"""Stop-loss evaluation: per watched entity, windowed sums -> verdict -> alert or not.

Pure (no I/O).  The dataflow keys one *watch* per rule target — an ad, or an ad set or
campaign aggregated from its ads — and calls :func:`watch` with every applied snapshot
of that target, so evaluation happens on each new delta against state the flow keeps
(and Bytewax snapshots), never by polling the database.

Why each rule of the game:
- ratios are ratios of sums, and an undefined ratio (zero denominator) satisfies no
  condition (``ROAS < 1`` must not fire for an ad that spent nothing);
- guards (minimum spend / impressions / clicks) gate both firing and recovering, so thin
  data decides nothing;
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

import functools
import operator
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from domain.deltas import Applied, _from_micros, _micros, _pack, _unpack
from domain.kpis import RATIO_DECIMALS, RATIO_PARTS, Sums, kpis, ratio
from schemas.alerts import Alert
from schemas.metrics import NO_METRICS, Metrics
from schemas.rules import MAX_DAYS, MAX_HOURS, Condition, Group, Rule

DEFAULT_WARMUP = timedelta(minutes=30)
LEAF_LEVELS = frozenset({"ad", "asset_group"})


# ---- the verdict: one rule over one set of sums (also used by the API's dry-run) -------


def observed(sums: Sums | Metrics) -> dict[str, Decimal | int | None]:
    """Every measure and ratio of a window, as an alert or a dry run shows them."""
    return kpis(Sums(sums.spend, sums.impressions, sums.clicks, sums.conversions, sums.revenue))


@dataclass(frozen=True, slots=True)
class Verdict:
    guarded: bool  # the minimum-data guards are met
    matched: bool  # guarded and the conditions hold
    observed: dict[str, Decimal | int | None]

Check = Callable[[Sums | Metrics], bool]
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq, "!=": operator.ne,
}


def _compile_condition(c: Condition) -> Check:
    compare, value = _OPERATORS[c.operator], c.value
    parts = RATIO_PARTS.get(c.metric)
    if parts is None:
        get = operator.attrgetter(c.metric)
        return lambda s: compare(get(s), value)
    num, den, scale = operator.attrgetter(parts[0]), operator.attrgetter(parts[1]), parts[2]

    def check_ratio(s: Sums | Metrics) -> bool:
        d = den(s)
        if d == 0:  # undefined ratio: satisfies nothing, not even "!="
            return False
        n = num(s) * scale
        if d > 0:
            # The ratio is compared as reported (rounded to RATIO_DECIMALS), but a
            # division and a rounding per check add up on the hot path: away from the
            # threshold by more than the rounding can move it, the exact products decide.
            gap = n - value * d
            if abs(gap) > _ROUNDING_MARGIN * d:
                return compare(gap, 0)
        return compare(ratio(n, d), value)

    return check_ratio

_ROUNDING_MARGIN = Decimal(1).scaleb(-RATIO_DECIMALS)  # > the half unit rounding moves a ratio


def compile_group(g: Group) -> Check:
    """The group as one function of the window's sums: what :func:`holds` means, without
    walking the tree (an ``and`` stops at the first False, an ``or`` at the first True)."""
    checks = tuple(compile_group(c) if isinstance(c, Group) else _compile_condition(c) for c in g.conditions)
    if len(checks) == 1:
        return checks[0]
    if g.op == "or":
        return lambda s: any(check(s) for check in checks)
    return lambda s: all(check(s) for check in checks)

# Compiled groups by identity; the entry keeps its group alive, so an id is never reused
# while cached.  Rules are few and change rarely; the cap only bounds a long-lived process.
_COMPILED: dict[int, tuple[Group, Check]] = {}
_MAX_COMPILED = 50_000


def check_of(g: Group) -> Check:
    hit = _COMPILED.get(id(g))
    if hit is not None and hit[0] is g:
        return hit[1]
    if len(_COMPILED) >= _MAX_COMPILED:
        _COMPILED.clear()
    check = compile_group(g)
    _COMPILED[id(g)] = (g, check)
    return check


def holds(g: Group, sums: Sums | Metrics) -> bool:
    return check_of(g)(sums)


def guarded(rule: Rule, sums: Sums | Metrics) -> bool:
    return (
        (rule.min_spend is None or sums.spend >= rule.min_spend)
        and (rule.min_impressions is None or sums.impressions >= rule.min_impressions)
        and (rule.min_clicks is None or sums.clicks >= rule.min_clicks)
    )


def judge(rule: Rule, sums: Sums) -> Verdict:
    ok = guarded(rule, sums)
    return Verdict(ok, ok and holds(rule.conditions, sums), observed(sums))


# ---- per-campaign state --------------------------------------------------------------


@dataclass(slots=True)
class Mark:
    """What one rule last did on one target."""

    fired_day: date | None = None  # account day of the last firing
    last_fired_at: datetime | None = None
    open_alert: str | None = None  # fingerprint of a fired alert not yet recovered
    open_day: date | None = None


@dataclass(slots=True)
class WatchState:
    """Everything the rules need about one campaign.  One state per campaign means one
    stateful step per snapshot, whatever the levels its rules are written at.

    Aggregates (its ad sets and the campaign) keep running per-day totals, moved by each
    applied snapshot's delta (the change since that ad's previous applied snapshot of
    the same report date, which this watch also saw) or, on the first sight of an ad's
    day, by its whole cumulative.  So the watch holds no per-ad values unless a rule of
    the account needs them: an ad-level window over past days (``days``) or over hours
    (``hours``).  Bytewax deep-copies and pickles every touched campaign's watch at each
    epoch, so what it does not hold it does not copy."""

    since: datetime  # captured_at of the first snapshot this watch saw
    # report_date -> the ads whose day the totals include (first sight adds the cumulative)
    seen: dict[date, set[str]] = field(default_factory=dict)
    # per ad set / campaign ("level:id"), per report date, the sum of its ads' latest
    # cumulative values (of the ads seen since the watch started)
    totals: dict[str, dict[date, Metrics]] = field(default_factory=dict)
    # report_date -> ad -> its latest cumulative: only while an ad-level days window exists
    days: dict[date, dict[str, Metrics]] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)  # ad -> its ad set (hours windows)
    # ad -> hour index (UTC hours since the epoch) -> sum of its deltas captured then
    hours: dict[str, dict[int, Metrics]] = field(default_factory=dict)
    marks: dict[str, dict[str, Mark]] = field(default_factory=dict)  # target id -> rule id -> mark
    latest_day: date | None = None
    rules_seen: int = -1  # the rule book generation the marks were last checked against
    # Hourly deltas are kept only while some rule of the account has an ``hours`` window
    # (they are most of the state otherwise); this is when they started.
    hours_since: datetime | None = None

    def __deepcopy__(self, memo: dict[int, object]) -> WatchState:
        # Bytewax deep-copies every changed key's state at each snapshot.  Metrics,
        # dates and strings are immutable: copying the containers (and the mutable
        # marks) is ~20x cheaper than the generic walk and just as safe.
        return WatchState(
            self.since,
            {d: set(ads) for d, ads in self.seen.items()},
            {k: dict(v) for k, v in self.totals.items()},
            {d: dict(children) for d, children in self.days.items()},
            dict(self.parents),
            {c: dict(h) for c, h in self.hours.items()},
            {t: {r: Mark(m.fired_day, m.last_fired_at, m.open_alert, m.open_day) for r, m in ms.items()}
             for t, ms in self.marks.items()},
            self.latest_day,
            self.rules_seen,
            self.hours_since,
        )

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Pickled at every snapshot too: flat tuples of ints and strings instead of
        # dataclasses and Decimals (see ``deltas.EntityState.__reduce__``).
        # (List comprehensions: a generator per nested container costs more than its items.)
        seen = [(d.toordinal(), tuple(ads)) for d, ads in self.seen.items()]
        totals = [(k, [(d.toordinal(), *_pack(m)) for d, m in v.items()]) for k, v in self.totals.items()]
        days = [(d.toordinal(), [(c, *_pack(m)) for c, m in ch.items()]) for d, ch in self.days.items()]
        hours = [(c, [(k, *_pack(m)) for k, m in h.items()]) for c, h in self.hours.items()]
        marks = [
            (t, r, m.fired_day.toordinal() if m.fired_day else 0,
             _micros(m.last_fired_at) if m.last_fired_at else None, m.open_alert,
             m.open_day.toordinal() if m.open_day else 0)
            for t, ms in self.marks.items() for r, m in ms.items()
        ]
        return (_restore_watch_v2, (
            _micros(self.since), seen, totals, days, self.parents, hours, marks,
            self.latest_day.toordinal() if self.latest_day else 0, self.rules_seen,
            _micros(self.hours_since) if self.hours_since else None,
        ))


def _restore_watch_v2(since: int, seen: list[Any], totals: list[Any], days: list[Any],
                   parents: dict[str, str | None], hours: list[Any], marks: list[Any], latest: int,
                   rules_seen: int, hours_since: int | None) -> WatchState:
    state = WatchState(
        _from_micros(since),
        {date.fromordinal(d): set(ads) for d, ads in seen},
        {k: {date.fromordinal(x[0]): _unpack(x[1:]) for x in v} for k, v in totals},
        {date.fromordinal(d): {c[0]: _unpack(c[1:]) for c in ch} for d, ch in days},
        parents,
        {c: {k[0]: _unpack(k[1:]) for k in h} for c, h in hours},
        {},
        date.fromordinal(latest) if latest else None,
        rules_seen,
        _from_micros(hours_since) if hours_since is not None else None,
    )
    for t, r, fired, last, open_alert, open_day in marks:
        state.marks.setdefault(t, {})[r] = Mark(
            date.fromordinal(fired) if fired else None, _from_micros(last) if last is not None else None,
            open_alert, date.fromordinal(open_day) if open_day else None)
    return state


def _restore_watch(since: int, days: tuple[Any, ...], parents: dict[str, str | None], hours: tuple[Any, ...],
                   marks: tuple[Any, ...], latest: int, rules_seen: int, hours_since: int | None,
                   contributes: dict[str, tuple[str, ...]]) -> WatchState:
    """A watch snapshotted by the previous version (every ad's values per day, totals
    derived): a recovery store written before an upgrade must still load.  The totals
    are summed from those values; the ads' days stay until a fold finds no rule needing
    them."""
    state = _restore_watch_v2(since, [], [], list(days), parents, list(hours), list(marks), latest, rules_seen,
                              hours_since)
    for d, children in state.days.items():
        state.seen[d] = set(children)
        for child, m in children.items():
            for k in contributes.get(child, ()):
                per_day = state.totals.setdefault(k, {})
                prev = per_day.get(d)
                per_day[d] = m if prev is None else prev + m
    return state


def _hour(ts: datetime) -> int:
    return int(ts.timestamp()) // 3600


def _sum(ms: Collection[Metrics]) -> Metrics:
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


class Target(NamedTuple):
    """What a rule judges: an ad, an ad set or a campaign (a tuple: built three times
    per snapshot, where a frozen dataclass costs several times more)."""

    level: str
    target_id: str


def _contributes_to(applied: Applied) -> tuple[str, ...]:
    s = applied.snapshot
    if s.entity_level == "campaign":
        return (f"campaign:{s.entity_id}",)
    if s.entity_level == "adset":
        return (f"adset:{s.entity_id}", f"campaign:{s.campaign_id}")
    if s.adset_id:
        return (f"adset:{s.adset_id}", f"campaign:{s.campaign_id}")
    return (f"campaign:{s.campaign_id}",)


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
        first_hour = _hour(now) - rule.window_n
        if t.level in LEAF_LEVELS:
            per_child = [state.hours.get(t.target_id, {})]
        else:
            child = _children(state, t)
            per_child = [h for c, h in state.hours.items() if child(c)]
        return _sum([m for h in per_child for k, m in h.items() if k > first_hour])
    if t.level in LEAF_LEVELS:
        if rule.window == "today":
            # A leaf target is the snapshot's own ad, and "today" rules only look at
            # snapshots of today: its window is the snapshot.
            s = applied.snapshot
            return s.metrics if s.report_date == today and s.entity_id == t.target_id else NO_METRICS
        days = state.days
        return _sum([m for d in _dates(today, rule.window_n)
                     if (ch := days.get(d)) is not None and (m := ch.get(t.target_id)) is not None])
    per_day = state.totals.get(t.level + ":" + t.target_id)
    if not per_day:
        return NO_METRICS
    if rule.window == "today":
        return per_day.get(today) or NO_METRICS
    return _sum([m for d in _dates(today, rule.window_n) if (m := per_day.get(d)) is not None])


def covers(rule: Rule, report_date: date, today: date) -> bool:
    """Does a change to ``report_date`` move this rule's window?"""
    if rule.window == "today":
        return report_date == today
    if rule.window == "hours":
        return True
    return 0 <= today.toordinal() - report_date.toordinal() < rule.window_n


def targets_for(applied: Applied, levels: Iterable[str]) -> list[Target]:
    s = applied.snapshot
    out = []
    for level in levels:
        if level == "ad":
            if s.entity_level in LEAF_LEVELS:
                out.append(Target("ad", s.entity_id))
        elif level == "adset":
            if s.entity_level == "adset":
                out.append(Target("adset", s.entity_id))
            elif s.entity_level in LEAF_LEVELS and s.adset_id:
                out.append(Target("adset", s.adset_id))
        elif level == "campaign":
            out.append(Target("campaign", s.entity_id if s.entity_level == "campaign" else s.campaign_id))
    return out


def watch_key(applied: Applied) -> str:
    """The campaign a snapshot belongs to: the key of its watch."""
    s = applied.snapshot
    return f"{s.workspace_id}:{s.provider}:{s.account_id}:{s.campaign_id}"


def in_scope(rule: Rule, applied: Applied, t: Target, name_of: Callable[[str], str | None]) -> bool:
    s = applied.snapshot
    if rule.providers and s.provider not in rule.providers:
        return False
    if rule.account_ids and s.account_id not in rule.account_ids:
        return False
    if rule.campaign_ids and s.campaign_id not in rule.campaign_ids:
        return False
    if rule.name_contains is not None:
        name = name_of(t.target_id)
        return name is not None and rule.name_contains in name.lower()
    return True


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
    for k in _contributes_to(applied):
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
    h = _hour(s.captured_at)
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
