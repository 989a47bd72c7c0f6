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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from pipelines.deltas import Applied
from pipelines.kpis import Sums, kpis
from pipelines.rollups import local_date
from schemas.alerts import Alert
from schemas.metrics import Metrics
from schemas.rules import MAX_DAYS, MAX_HOURS, Condition, Group, Rule

DEFAULT_WARMUP = timedelta(minutes=30)
LEAF_LEVELS = frozenset({"ad", "asset_group"})


# ---- the verdict: one rule over one set of sums (also used by the API's dry-run) -------


@dataclass(frozen=True, slots=True)
class Verdict:
    guarded: bool  # the minimum-data guards are met
    matched: bool  # guarded and the conditions hold
    observed: dict[str, Decimal | int | None]


def _holds(c: Condition, observed: dict[str, Decimal | int | None]) -> bool:
    v = observed[c.metric]
    if v is None:  # undefined ratio: satisfies nothing, not even "!="
        return False
    op = c.operator
    if op == "<":
        return v < c.value
    if op == "<=":
        return v <= c.value
    if op == ">":
        return v > c.value
    if op == ">=":
        return v >= c.value
    if op == "=":
        return v == c.value
    return v != c.value


def holds(g: Group, observed: dict[str, Decimal | int | None]) -> bool:
    results = (holds(c, observed) if isinstance(c, Group) else _holds(c, observed) for c in g.conditions)
    return all(results) if g.op == "and" else any(results)


def judge(rule: Rule, sums: Sums) -> Verdict:
    observed = kpis(sums)
    guarded = (
        (rule.min_spend is None or sums.spend >= rule.min_spend)
        and (rule.min_impressions is None or sums.impressions >= rule.min_impressions)
        and (rule.min_clicks is None or sums.clicks >= rule.min_clicks)
    )
    return Verdict(guarded, guarded and holds(rule.conditions, observed), observed)


# ---- per-target state --------------------------------------------------------------


@dataclass(slots=True)
class Mark:
    """What one rule last did on one target."""

    fired_day: date | None = None  # account day of the last firing
    last_fired_at: datetime | None = None
    open_alert: str | None = None  # fingerprint of a fired alert not yet recovered
    open_day: date | None = None


@dataclass(slots=True)
class WatchState:
    since: datetime  # captured_at of the first snapshot this watch saw
    # report_date -> child entity id -> its latest cumulative for that date
    days: dict[date, dict[str, Metrics]] = field(default_factory=dict)
    # hour index (UTC hours since the epoch) -> sum of deltas captured in that hour
    hours: dict[int, Metrics] = field(default_factory=dict)
    marks: dict[str, Mark] = field(default_factory=dict)  # rule id -> mark
    latest_day: date | None = None


def _hour(ts: datetime) -> int:
    return int(ts.timestamp()) // 3600


def _sum(ms: Iterable[Metrics]) -> Sums:
    spend = conversions = revenue = Decimal(0)
    impressions = clicks = 0
    for m in ms:
        spend += m.spend
        impressions += m.impressions
        clicks += m.clicks
        conversions += m.conversions
        revenue += m.revenue
    return Sums(spend, impressions, clicks, conversions, revenue)


def window_sums(state: WatchState, rule: Rule, today: date, now: datetime) -> Sums | None:
    """The rule's window over this target; None when the watch cannot know it yet."""
    if rule.window == "hours":
        if now - state.since < timedelta(hours=rule.window_n):
            return None
        h = _hour(now)
        return _sum(m for k, m in state.hours.items() if k > h - rule.window_n)
    first = today - timedelta(days=(rule.window_n if rule.window == "days" else 1) - 1)
    return _sum(m for d, children in state.days.items() if first <= d <= today for m in children.values())


def covers(rule: Rule, report_date: date, today: date) -> bool:
    """Does a change to ``report_date`` move this rule's window?"""
    if rule.window == "hours":
        return True
    n = rule.window_n if rule.window == "days" else 1
    return today - timedelta(days=n - 1) <= report_date <= today


@dataclass(frozen=True, slots=True)
class Target:
    """Which watch a snapshot feeds, for one rule level."""

    level: str
    target_id: str


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
            if s.entity_level == "campaign":
                out.append(Target("campaign", s.entity_id))
            elif s.entity_level != "campaign":
                out.append(Target("campaign", s.campaign_id))
    return out


def target_key(applied: Applied, t: Target) -> str:
    s = applied.snapshot
    return f"{s.workspace_id}:{s.provider}:{s.account_id}:{t.level}:{t.target_id}"


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


def _fold(state: WatchState, applied: Applied, today: date) -> None:
    s = applied.snapshot
    state.days.setdefault(s.report_date, {})[s.entity_id] = s.metrics
    h = _hour(s.captured_at)
    prev = state.hours.get(h)
    state.hours[h] = applied.delta if prev is None else prev + applied.delta
    if state.latest_day is None or today > state.latest_day:
        state.latest_day = today
        oldest = today - timedelta(days=MAX_DAYS)
        for d in [d for d in state.days if d < oldest]:
            del state.days[d]
    if len(state.hours) > MAX_HOURS + 2:
        for k in [k for k in state.hours if k <= h - MAX_HOURS - 1]:
            del state.hours[k]


def _fingerprint(rule: Rule, applied: Applied, t: Target, slot: str) -> str:
    s = applied.snapshot
    return f"{rule.id}|{s.provider}:{s.account_id}:{t.level}:{t.target_id}|{slot}|fired"


def _alert(rule: Rule, applied: Applied, t: Target, fingerprint: str, kind: str, today: date,
           verdict: Verdict) -> Alert:
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
        window=rule.window if rule.window == "today" else f"{rule.window}:{rule.window_n}",
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
        observed=tuple(verdict.observed.items()),
        notify=rule.notify if (not recovered or rule.notify_recovery) else (),
        pause=rule.pause and not recovered,
        pause_dry_run=rule.pause_dry_run,
        resume=recovered and rule.pause and rule.resume_on_recovery,
    )


def evaluate(state: WatchState, rule: Rule, applied: Applied, t: Target, today: date,
             warmup: timedelta) -> Alert | None:
    """One rule on one target after ``applied`` was folded in: fire, recover or nothing."""
    s = applied.snapshot
    mark = state.marks.get(rule.id)
    if mark is None:
        mark = state.marks[rule.id] = Mark()
    if mark.open_alert is not None and mark.open_day != today:
        mark.open_alert = None  # the day it was about is over: close silently
    if not covers(rule, s.report_date, today):
        return None
    if t.level not in LEAF_LEVELS and s.captured_at - state.since < warmup:
        return None
    sums = window_sums(state, rule, today, s.captured_at)
    if sums is None:
        return None
    verdict = judge(rule, sums)
    if not verdict.guarded:
        return None
    if not verdict.matched:
        if mark.open_alert is None:
            return None
        fingerprint = mark.open_alert.removesuffix("|fired") + "|recovered"
        mark.open_alert = None
        return _alert(rule, applied, t, fingerprint, "recovered", today, verdict)
    d = applied.delta
    if not (d.spend > 0 or d.impressions > 0):
        return None  # no delivery in this delta: restated numbers of a paused entity
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
    return _alert(rule, applied, t, fingerprint, "fired", today, verdict)


def watch(
    state: WatchState | None,
    applied: Applied,
    target: Target,
    rules: Iterable[Rule],
    name_of: Callable[[str], str | None] = lambda _: None,
    warmup: timedelta = DEFAULT_WARMUP,
) -> tuple[WatchState, list[Alert]]:
    """Fold one applied snapshot into its target's watch, then evaluate the rules of
    that level in scope.  Mutates and returns ``state``."""
    s = applied.snapshot
    if state is None:
        state = WatchState(since=s.captured_at)
    today = local_date(s.captured_at, s.timezone)
    _fold(state, applied, today)
    alerts = []
    live = set()
    for rule in rules:
        live.add(rule.id)
        if not in_scope(rule, applied, target, name_of):
            continue
        alert = evaluate(state, rule, applied, target, today, warmup)
        if alert is not None:
            alerts.append(alert)
    if len(state.marks) > len(live):
        for rid in [r for r in state.marks if r not in live]:
            del state.marks[rid]  # the rule was deleted or paused
    return state, alerts


__all__ = [
    "DEFAULT_WARMUP",
    "Mark",
    "Target",
    "Verdict",
    "WatchState",
    "covers",
    "evaluate",
    "holds",
    "in_scope",
    "judge",
    "target_key",
    "targets_for",
    "watch",
    "window_sums",
]
