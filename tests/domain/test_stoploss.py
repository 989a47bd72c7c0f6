"""Stop-loss evaluation: verdicts, trigger modes, guards, recovery, aggregate targets,
windows and replay determinism — all on the pure functions the dataflow calls."""

from __future__ import annotations

import copy
import operator
import pickle
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.deltas import Applied, EntityState, apply_snapshot
from domain.kpis import Sums
from domain.rulebook import RuleBook
from domain.stoploss.conditions import judge
from domain.stoploss.state import WatchState
from domain.stoploss.targets import Target, targets_for, watch_key
from domain.stoploss.watch import watch
from pipelines import codecs
from pipelines.steps import watch_step, watch_target
from schemas.alerts import Alert
from schemas.insight import Snapshot
from schemas.rules import Condition, Group, Rule, RuleV1, to_rule
from tests.factories import WS, metrics, snap

codecs.register()  # recovery snapshots pickle watches with the pipeline's codec

DAY = date(2026, 3, 10)
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
NO_WARMUP = timedelta(0)


def rule(conditions: list[dict[str, Any]] | dict[str, Any], **extra: Any) -> Rule:
    body: dict[str, Any] = {
        "name": "burn",
        "conditions": conditions if isinstance(conditions, dict) else {"op": "and", "conditions": conditions},
        **extra,
    }
    return to_rule(RuleV1.model_validate({
        "id": str(uuid.uuid4()), "workspace_id": WS, "updated_at": T0.isoformat(), **body,
    }))


BURN = [{"metric": "spend", "operator": ">=", "value": "80"}, {"metric": "conversions", "operator": "=", "value": "0"}]


class Feed:
    """Runs snapshots through the real delta step, then the watch of one target."""

    def __init__(self, rules: list[Rule], level: str = "ad", warmup: timedelta = NO_WARMUP) -> None:
        self.rules = rules
        self.level = level
        self.warmup = warmup
        self.entities: dict[str, EntityState] = {}
        self.watches: dict[str, WatchState] = {}

    def push(self, at: datetime, spend: str, conversions: str = "0", *, entity: str = "ad-1",
             day: date = DAY, impressions: int | None = None, revenue: str = "0") -> list[Alert]:
        imps = impressions if impressions is not None else int(Decimal(spend) * 100)
        s = snap(at, day, metrics(spend, imps, imps // 50, conversions, revenue), entity=entity)
        state, outcome = apply_snapshot(self.entities.get(entity), s)
        self.entities[entity] = state
        if not isinstance(outcome, Applied):
            return []
        key = watch_key(outcome)
        st_, alerts = watch(self.watches.get(key), outcome, {self.level: tuple(self.rules)}, warmup=self.warmup)
        self.watches[key] = st_
        return alerts


def routed(book: RuleBook, s: Snapshot) -> Applied:
    """A first snapshot through the delta step and the flow's routing to its watch."""
    _, applied = apply_snapshot(None, s)
    assert isinstance(applied, Applied)
    found = watch_target(book, applied)
    assert found is not None
    return found[1]


def kinds(alerts: list[Alert]) -> list[str]:
    return [a.kind for a in alerts]


# ---- verdicts ------------------------------------------------------------------------


def test_undefined_ratio_never_satisfies_a_condition() -> None:
    for op in ("<", "<=", ">", ">=", "=", "!="):
        r = rule([{"metric": "roas", "operator": op, "value": "1"}])
        assert judge(r, Sums(Decimal(0), 0, 0, Decimal(0), Decimal(0))).matched is False
    assert judge(rule([{"metric": "roas", "operator": "<", "value": "1"}]),
                 Sums(Decimal(10), 100, 1, Decimal(0), Decimal(5))).matched is True


def test_guards_gate_the_verdict() -> None:
    r = rule([{"metric": "roas", "operator": "<", "value": "1"}], guards={"min_spend": "50", "min_impressions": 1000})
    thin = judge(r, Sums(Decimal(20), 5000, 5, Decimal(0), Decimal(1)))
    assert (thin.guarded, thin.matched) == (False, False)
    enough = judge(r, Sums(Decimal(60), 5000, 5, Decimal(0), Decimal(1)))
    assert (enough.guarded, enough.matched) == (True, True)
    assert enough.observed["roas"] == (Decimal(1) / Decimal(60)).quantize(Decimal("0.000001"))
    assert enough.observed["cpa"] is None  # no conversions: undefined, not 0


_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq, "!=": operator.ne}
_metric = st.sampled_from(["spend", "clicks", "conversions", "roas", "cpa", "ctr"])
_cond = st.builds(lambda m, o, v: {"metric": m, "operator": o, "value": str(v)},
                  _metric, st.sampled_from(list(_OPS)), st.integers(0, 20))
_tree = st.recursive(
    st.builds(lambda cs, op: {"op": op, "conditions": cs}, st.lists(_cond, min_size=1, max_size=3),
              st.sampled_from(["and", "or"])),
    lambda inner: st.builds(lambda cs, op: {"op": op, "conditions": cs},
                            st.lists(st.one_of(_cond, inner), min_size=1, max_size=3), st.sampled_from(["and", "or"])),
    max_leaves=6,
)


def _oracle(node: dict[str, Any], values: dict[str, Decimal | None]) -> bool:
    if "metric" in node:
        v = values[node["metric"]]
        return v is not None and _OPS[node["operator"]](v, Decimal(node["value"]))
    parts = [_oracle(c, values) for c in node["conditions"]]
    return all(parts) if node["op"] == "and" else any(parts)


@settings(max_examples=300, deadline=None)
@given(tree=_tree.filter(lambda t: _depth(t) <= 3), spend=st.integers(0, 30), clicks=st.integers(0, 30),
       conv=st.integers(0, 5), revenue=st.integers(0, 60), imps=st.integers(0, 3000))
def test_and_or_trees_match_an_independent_oracle(tree: dict[str, Any], spend: int, clicks: int, conv: int,
                                                   revenue: int, imps: int) -> None:
    r = rule(tree)
    s = Sums(Decimal(spend), imps, clicks, Decimal(conv), Decimal(revenue))
    q = Decimal("0.000001")
    values: dict[str, Decimal | None] = {
        "spend": Decimal(spend), "clicks": Decimal(clicks), "conversions": Decimal(conv),
        "roas": (Decimal(revenue) / spend).quantize(q) if spend else None,
        "cpa": (Decimal(spend) / conv).quantize(q) if conv else None,
        "ctr": (Decimal(clicks) / imps).quantize(q) if imps else None,
    }
    assert judge(r, s).matched is _oracle(tree, values)


@settings(max_examples=500, deadline=None)
@given(metric=st.sampled_from(["roas", "cpa", "cpc", "ctr", "cpm"]), op=st.sampled_from(sorted(_OPS)),
       num=st.integers(0, 10**9), den=st.integers(0, 10**7), cents=st.booleans(),
       nudge=st.integers(-3, 3), exact=st.booleans())
def test_ratio_conditions_compare_the_rounded_ratio_even_at_the_threshold(
        metric: str, op: str, num: int, den: int, cents: bool, nudge: int, exact: bool) -> None:
    """A ratio condition compares the ratio as reported (rounded half up to 6 decimals),
    including thresholds a rounding step or two from it, where the fast comparison of
    products must give way to the exact one."""
    from domain.kpis import ratio
    from schemas.measures import RATIO_PARTS
    top, bottom, scale = RATIO_PARTS[metric]
    money = Decimal(10) ** -6 if cents else Decimal(1)
    s = Sums(spend=Decimal(num if top == "spend" else den) * money, impressions=den,
             clicks=num if top == "clicks" else den, conversions=Decimal(den) * money,
             revenue=Decimal(num) * money)
    reported = ratio(getattr(s, top), getattr(s, bottom), scale)
    if reported is None:
        threshold = Decimal(abs(nudge))
    else:
        # Thresholds have at most 6 decimals: the reported ratio, or the exact one cut
        # towards zero, moved by a few steps of 10^-6.
        exact_value = Decimal(scale) * Decimal(getattr(s, top)) / Decimal(getattr(s, bottom))
        step = Decimal("0.000001")
        base = reported if exact else exact_value.quantize(step, rounding=ROUND_DOWN)
        threshold = min(max(Decimal(0), base + nudge * step), Decimal(10**10))  # the API's bounds
    r = rule([{"metric": metric, "operator": op, "value": str(threshold)}])
    want = reported is not None and _OPS[op](reported, threshold)
    assert judge(r, s).matched is want


def _depth(t: dict[str, Any]) -> int:
    return 1 + max((_depth(c) for c in t["conditions"] if "op" in c), default=0)


# ---- trigger modes, delivery, recovery ------------------------------------------------


def test_fires_once_per_account_day_when_threshold_is_crossed() -> None:
    f = Feed([rule(BURN)])
    assert f.push(T0, "30") == []
    assert f.push(T0 + timedelta(minutes=15), "60") == []
    fired = f.push(T0 + timedelta(minutes=30), "90")
    assert kinds(fired) == ["fired"]
    a = fired[0]
    assert a.report_date == DAY and dict(a.observed)["spend"] == Decimal("90")
    assert a.fingerprint.endswith(f"|{DAY.isoformat()}|fired") and ":ad:ad-1|" in a.fingerprint
    assert f.push(T0 + timedelta(minutes=45), "120") == []
    next_day = f.push(T0 + timedelta(days=1), "95", day=DAY + timedelta(days=1))
    assert kinds(next_day) == ["fired"] and next_day[0].fingerprint != a.fingerprint


def test_late_conversions_send_one_recovery_and_resume_flag() -> None:
    r = rule(BURN, actions={"pause": {"enabled": True, "dry_run": False}, "resume_on_recovery": True})
    f = Feed([r])
    fired = f.push(T0, "90")
    assert kinds(fired) == ["fired"] and fired[0].pause and not fired[0].resume
    # Same spend, conversions credited late: no delivery in this delta, but recovery may.
    rec = f.push(T0 + timedelta(minutes=20), "90", "2", impressions=9000)
    assert kinds(rec) == ["recovered"]
    assert rec[0].fingerprint == fired[0].fingerprint.removesuffix("|fired") + "|recovered"
    assert rec[0].resume and not rec[0].pause
    assert f.push(T0 + timedelta(minutes=40), "100", "2") == []


def test_restated_numbers_without_delivery_never_fire() -> None:
    f = Feed([rule(BURN)])
    assert f.push(T0, "90", "1") == []  # has a conversion: fine
    # The ad is paused; a restatement takes the conversion away, spend unchanged.
    assert f.push(T0 + timedelta(minutes=30), "90", "0", impressions=9000) == []


def test_cooldown_and_every_time() -> None:
    cool = Feed([rule(BURN, trigger={"mode": "cooldown", "minutes": 60})])
    first = cool.push(T0, "90")
    assert kinds(first) == ["fired"]
    assert cool.push(T0 + timedelta(minutes=30), "100") == []
    again = cool.push(T0 + timedelta(minutes=61), "110")
    assert kinds(again) == ["fired"] and again[0].fingerprint != first[0].fingerprint
    every = Feed([rule(BURN, trigger={"mode": "every_time"})])
    got = [every.push(T0 + timedelta(minutes=i), str(90 + i)) for i in range(3)]
    assert [len(g) for g in got] == [1, 1, 1]
    assert len({g[0].fingerprint for g in got}) == 3


def test_guards_keep_thin_data_from_firing_and_recovering() -> None:
    r = rule([{"metric": "roas", "operator": "<", "value": "1"}], guards={"min_spend": "50"})
    f = Feed([r])
    assert f.push(T0, "20", revenue="1") == []  # ROAS 0.05 but only $20 spent
    assert kinds(f.push(T0 + timedelta(minutes=15), "60", revenue="1")) == ["fired"]


def test_campaign_rule_sums_its_ads_after_warmup() -> None:
    r = rule(BURN, scope={"level": "campaign"})
    f = Feed([r], level="campaign", warmup=timedelta(minutes=30))
    assert f.push(T0, "50", entity="ad-1") == []
    assert f.push(T0 + timedelta(minutes=1), "40", entity="ad-2") == []  # 90 in total, but warming up
    assert f.push(T0 + timedelta(minutes=20), "50", entity="ad-1") == []
    fired = f.push(T0 + timedelta(minutes=31), "45", entity="ad-2")
    assert kinds(fired) == ["fired"]
    assert fired[0].entity_level == "campaign" and fired[0].entity_id == "cmp-1"
    assert dict(fired[0].observed)["spend"] == Decimal("95")  # 50 + 45, latest of each ad


def test_days_window_adds_past_days_and_hours_window_waits_for_coverage() -> None:
    days = Feed([rule(BURN, window={"kind": "days", "n": 2})])
    assert days.push(T0 - timedelta(days=1), "60", day=DAY - timedelta(days=1)) == []
    assert kinds(days.push(T0, "30")) == ["fired"]  # 60 yesterday + 30 today
    hours = Feed([rule([{"metric": "spend", "operator": ">=", "value": "10"}], window={"kind": "hours", "n": 2})])
    assert hours.push(T0, "50") == []  # the watch does not cover 2 hours yet
    assert hours.push(T0 + timedelta(hours=1), "55") == []
    fired = hours.push(T0 + timedelta(hours=2, minutes=5), "70")
    assert kinds(fired) == ["fired"]
    assert dict(fired[0].observed)["spend"] == Decimal("20")  # deltas of the last 2 clock hours: 5 + 15


def test_scope_filters_provider_account_campaign_and_name() -> None:
    f = Feed([rule(BURN, scope={"level": "ad", "providers": ["meta"]})])
    assert f.push(T0, "90") == []  # snapshots are provider "sim"
    g = Feed([rule(BURN, scope={"level": "ad", "account_ids": ["act-1"], "campaign_ids": ["cmp-1"]})])
    assert kinds(g.push(T0, "90")) == ["fired"]
    book = RuleBook([rule(BURN, scope={"level": "ad", "name_contains": "Retarget"})])
    item = routed(book, snap(T0, DAY, metrics("90", 9000, 100)))
    assert watch_step(book, NO_WARMUP, None, item)[1] == []  # name unknown: never matches
    book.set_names({(WS, "sim", "act-1", "ad-1"): "US retargeting 2"})
    assert kinds(watch_step(book, NO_WARMUP, None, item)[1]) == ["fired"]
    other = RuleBook([rule(BURN, scope={"level": "ad", "account_ids": ["act-2"]})])
    assert watch_target(other, item) is None  # the rule's account is not this one


def test_replay_from_a_snapshot_reproduces_the_same_fingerprints() -> None:
    r = rule(BURN, trigger={"mode": "cooldown", "minutes": 30})
    f = Feed([r])
    f.push(T0, "40")
    saved = (pickle.loads(pickle.dumps(f.entities)), copy.deepcopy(f.watches))
    later = [(T0 + timedelta(minutes=m), str(50 + m)) for m in range(10, 120, 10)]
    first = [a.fingerprint for at, sp in later for a in f.push(at, sp)]
    f.entities, f.watches = saved
    second = [a.fingerprint for at, sp in later for a in f.push(at, sp)]
    assert first and first == second


def test_rulebook_keeps_the_newest_version_and_forgets_removed_rules() -> None:
    r1 = rule(BURN)
    book = RuleBook([r1])
    assert list(book.for_account(WS, "act-1")) == ["ad"]
    book.put(replace(r1, version=3, name="v3"))
    book.put(replace(r1, version=2, name="v2"))  # late replay of an older version
    assert [x.name for x in book.for_account(WS, "act-1")["ad"]] == ["v3"]
    book.remove(r1.id)
    assert book.for_account(WS, "act-1") == {}


def test_rulebook_indexes_account_scoped_rules_per_account() -> None:
    everywhere = rule(BURN, name="all")
    only_2 = rule(BURN, name="acc2", scope={"level": "campaign", "account_ids": ["act-2"]})
    book = RuleBook([everywhere, only_2])
    assert {lvl: [r.name for r in rs] for lvl, rs in book.for_account(WS, "act-1").items()} == {"ad": ["all"]}
    assert {lvl: [r.name for r in rs] for lvl, rs in book.for_account(WS, "act-2").items()} == {
        "ad": ["all"], "campaign": ["acc2"]}


def test_watch_is_dropped_when_its_levels_last_rule_goes() -> None:
    book = RuleBook([rule(BURN)])
    item = routed(book, snap(T0, DAY, metrics("10", 100, 1)))
    state, _ = watch_step(book, NO_WARMUP, None, item)
    assert state is not None
    book.remove(book.for_account(WS, "act-1")["ad"][0].id)
    assert watch_step(book, NO_WARMUP, state, item) == (None, [])
    assert watch_target(book, item) is None


@pytest.mark.parametrize("level, expected", [("ad", "ad-1"), ("adset", "set-1"), ("campaign", "cmp-1")])
def test_targets_roll_ads_up_to_their_parents(level: str, expected: str) -> None:
    _, applied = apply_snapshot(None, snap(T0, DAY, metrics("1", 1, 0)))
    assert isinstance(applied, Applied)
    assert targets_for(applied, [level]) == [Target(level, expected)]


def test_group_type_is_what_rules_evaluate() -> None:
    # The evaluated tree is the plain dataclass form of the API's JSON.
    r = rule(BURN)
    assert r.conditions == Group("and", (Condition("spend", ">=", Decimal("80")), Condition("conversions", "=", Decimal(0))))
    assert r.describe() == "spend >= 80 AND conversions = 0"


def test_watch_state_survives_bytewax_snapshots() -> None:
    """Bytewax deep-copies and pickles state at every snapshot (custom, compact forms)."""
    r = rule(BURN, scope={"level": "campaign"}, trigger={"mode": "cooldown", "minutes": 30})
    f = Feed([r, rule(BURN, window={"kind": "hours", "n": 1})], level="campaign")
    f.push(T0, "90", entity="ad-1")
    f.push(T0 + timedelta(minutes=20), "95", entity="ad-2")
    f.push(T0 + timedelta(hours=1), "120", entity="ad-1")
    [state] = f.watches.values()
    assert state.marks, "the scenario should have fired"
    for clone in (pickle.loads(pickle.dumps(state)), copy.deepcopy(state)):
        assert clone == state
        clone.days[DAY]["ad-1"] = metrics("1")
        clone.seen[DAY].add("ad-9")
        clone.totals["campaign:cmp-1"][DAY] = metrics("1")
        next(iter(next(iter(clone.marks.values())).values())).open_alert = "changed"
        clone.hours["ad-2"].clear()
        assert clone != state  # and the original is untouched:
        assert state.days[DAY]["ad-1"] == metrics("120", 12000, 240)
        assert state.seen[DAY] == {"ad-1", "ad-2"}
        assert state.totals["campaign:cmp-1"][DAY].spend == Decimal("215")
        assert all(m.open_alert != "changed" for ms in state.marks.values() for m in ms.values())
        assert state.hours["ad-2"]


def test_hourly_deltas_are_kept_only_while_an_hours_rule_exists() -> None:
    daily = rule(BURN)
    book = RuleBook([daily])
    item = routed(book, snap(T0, DAY, metrics("10", 100, 1)))
    state, _ = watch_step(book, NO_WARMUP, None, item)
    assert state is not None and state.hours == {} and state.hours_since is None
    hourly = rule([{"metric": "spend", "operator": ">=", "value": "1"}], window={"kind": "hours", "n": 1})
    book.put(hourly)
    assert book.uses_hours(WS, "act-1")
    later = T0 + timedelta(minutes=30)
    _, second = apply_snapshot(None, snap(later, DAY, metrics("20", 200, 2)))
    assert isinstance(second, Applied)
    state, alerts = watch_step(book, NO_WARMUP, state, second)
    assert state is not None and state.hours_since == later and alerts == []  # window not covered yet
    book.remove(hourly.id)
    state, _ = watch_step(book, NO_WARMUP, state, second)
    assert state is not None and state.hours == {} and state.hours_since is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(-20, 40), st.integers(0, 2)),
                min_size=1, max_size=40), st.integers(0, 10), st.booleans())
def test_aggregate_totals_always_equal_the_sum_of_their_ads(steps: list[tuple[int, int, int, int]], late: int,
                                                            ad_days: bool) -> None:
    """The running per-ad-set / per-campaign sums (moved by each snapshot's delta,
    restatements down included) equal a fresh sum over the latest values of the ads the
    watch has seen, also when the watch starts after the ads' first snapshots (rules
    added later: an ad's day enters whole at its first sight), with or without per-ad
    days kept, before and after a pickle round trip."""
    f = Feed([rule(BURN, scope={"level": "campaign"})], level="campaign")
    all_latest: dict[tuple[str, date], int] = {}
    latest: dict[tuple[str, date], int] = {}  # of the ad-days the watch saw
    for i, (ad, back, change, conv) in enumerate(steps):
        day = DAY - timedelta(days=back)
        spend = max(0, all_latest.get((f"ad-{ad}", day), 0) + change)
        s = snap(T0 + timedelta(minutes=i), day, metrics(str(spend), spend, 0, str(conv)), entity=f"ad-{ad}")
        s = replace(s, adset_id=f"set-{ad // 3}")
        state, outcome = apply_snapshot(f.entities.get(s.entity_id), s)
        f.entities[s.entity_id] = state
        if isinstance(outcome, Applied):
            all_latest[(s.entity_id, day)] = spend
            if i < late:
                continue  # no watch yet
            latest[(s.entity_id, day)] = spend
            key = watch_key(outcome)
            f.watches[key], _ = watch(f.watches.get(key), outcome, {"campaign": tuple(f.rules)}, warmup=NO_WARMUP,
                                      track_ad_days=ad_days)
    if not f.watches:
        return
    [w] = f.watches.values()
    assert bool(w.days) == ad_days
    for ad_id, day in latest:
        for key in ("campaign:cmp-1", f"adset:set-{int(ad_id[3:]) // 3}"):
            want = sum(v for (a, d), v in latest.items() if d == day and (key.startswith("campaign") or
                       f"set-{int(a[3:]) // 3}" == key.split(":")[1]))
            assert w.totals[key][day].spend == want
    assert pickle.loads(pickle.dumps(w)).totals == w.totals


class _SnapshotOfTheFirstVersion:
    """What a recovery store written before the watch kept totals holds: every ad's
    values per day, the ads' aggregate keys, no totals (``codecs.restore_watch_v1``'s layout)."""

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        days = ((DAY.toordinal(), (("ad-1", *codecs.pack(metrics("90", 9000, 180))),
                                   ("ad-2", *codecs.pack(metrics("30", 3000, 60, "1"))))),)
        marks = (("ad-1", "rule-1", DAY.toordinal(), codecs.micros(T0), "fp|fired", DAY.toordinal()),)
        contributes = {"ad-1": ("adset:set-1", "campaign:cmp-1"), "ad-2": ("adset:set-2", "campaign:cmp-1")}
        return (codecs.restore_watch_v1, (codecs.micros(T0), days, {"ad-1": "set-1", "ad-2": "set-2"}, (), marks,
                                          DAY.toordinal(), 3, None, contributes))


def test_a_watch_snapshotted_by_the_first_version_restores() -> None:
    """An upgrade must not crash on the recovery store the previous version wrote: its
    watches load, with totals summed from the ads' values, and keep folding exactly."""
    state = pickle.loads(pickle.dumps(_SnapshotOfTheFirstVersion()))
    assert isinstance(state, WatchState)
    assert state.seen == {DAY: {"ad-1", "ad-2"}}
    assert state.totals["campaign:cmp-1"][DAY] == metrics("120", 12000, 240, "1")
    assert state.totals["adset:set-2"][DAY] == metrics("30", 3000, 60, "1")
    assert state.marks["ad-1"]["rule-1"].open_alert == "fp|fired" and state.since == T0 and state.rules_seen == 3
    # A new version's pickle of it round-trips (through the current layout).
    assert pickle.loads(pickle.dumps(state)) == state
    # And it keeps folding by deltas: ad-1 goes from 90 to 100.
    entity, _ = apply_snapshot(None, snap(T0, DAY, metrics("90", 9000, 180)))
    _, applied = apply_snapshot(entity, snap(T0 + timedelta(minutes=15), DAY, metrics("100", 9500, 190)))
    assert isinstance(applied, Applied) and applied.delta.spend == Decimal("10")
    state, _ = watch(state, applied, {}, warmup=NO_WARMUP)
    assert state.totals["campaign:cmp-1"][DAY] == metrics("130", 12500, 250, "1")
