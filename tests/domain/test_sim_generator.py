"""Properties of the simulated feed: the awkward parts of real ad data, reproducibly.

Nothing here copies an expected number out of the generator; every test states a
property the feed must have (valid, monotone, rolls over at local midnight, restates up
and down, duplicates/reorders at about the configured rate, ...).
"""

from __future__ import annotations

import functools
import itertools
import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TypedDict
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.kafka import encode_snapshot
from domain.sim.generator import (
    SimEvent,
    Simulation,
    cumulative,
    expected_totals,
    local_day,
    poll_events,
    poll_stream,
    poll_stream_encoded,
)
from domain.sim.world import Ad, World, build_world
from schemas.insight import Snapshot, parse_insight
from schemas.measures import MEASURES
from schemas.metrics import Metrics

SEED = 11
# Spans 2024-03-10, the 23-hour spring-forward day in New York, and every zone's
# midnight at least twice.
START = datetime(2024, 3, 9, 20, 0, tzinfo=UTC)
POLLS = 200


class Rates(TypedDict):
    restatement_rate: float
    duplicate_rate: float
    out_of_order_rate: float


CHAOS = Rates(restatement_rate=0.05, duplicate_rate=0.04, out_of_order_rate=0.04)
CLEAN = Rates(restatement_rate=0.0, duplicate_rate=0.0, out_of_order_rate=0.0)

Series = tuple[str, str, str, str, date]


def series(s: Snapshot) -> Series:
    return (s.workspace_id, s.provider, s.account_id, s.entity_id, s.report_date)


@functools.cache
def world() -> World:
    return build_world(SEED)


@functools.cache
def chaos_events() -> tuple[SimEvent, ...]:
    return tuple(poll_events(world(), START, POLLS, seed=SEED, **CHAOS))


def ads() -> dict[str, Ad]:
    return world().ads_by_id


def full_day(ad: Ad, day: date, seed: int = SEED) -> Metrics:
    return cumulative(ad, day, 1.0, seed)


def metric_le(a: Metrics, b: Metrics) -> bool:
    """Every measure of ``a`` is at most that of ``b``."""
    return all(getattr(a, m) <= getattr(b, m) for m in MEASURES)


# -- determinism ------------------------------------------------------------------------


def test_same_seed_same_stream_different_seed_different_stream() -> None:
    w = world()
    one = list(poll_stream(w, START, 12, seed=1, **CHAOS))
    assert one == list(poll_stream(w, START, 12, seed=1, **CHAOS))
    assert one != list(poll_stream(w, START, 12, seed=2, **CHAOS))
    assert one != list(poll_stream(build_world(SEED + 1), START, 12, seed=1, **CHAOS))
    enc = list(poll_stream_encoded(w, START, 12, seed=1, **CHAOS))
    assert enc == list(poll_stream_encoded(w, START, 12, seed=1, **CHAOS))


# -- every message is a valid metricx.insight.v1 ----------------------------------------


def test_every_snapshot_round_trips_through_the_event_contract() -> None:
    for ev in chaos_events():
        key, value = encode_snapshot(ev.snapshot)
        assert parse_insight(value, key, now=ev.snapshot.captured_at) == ev.snapshot


def test_encoded_stream_is_byte_identical_to_encode_snapshot() -> None:
    snaps = list(poll_stream(world(), START, 60, seed=3, **CHAOS))
    pairs = list(poll_stream_encoded(world(), START, 60, seed=3, **CHAOS))
    assert len(snaps) == len(pairs)
    assert [encode_snapshot(s) for s in snaps] == pairs


def test_captured_at_is_utc_whole_milliseconds_and_money_has_two_decimals() -> None:
    for ev in chaos_events():
        s = ev.snapshot
        assert s.captured_at.utcoffset() == timedelta(0)
        assert s.captured_at.microsecond % 1000 == 0
        m = s.metrics
        for money in (m.spend, m.conversions, m.revenue):
            assert money >= 0 and money.as_tuple().exponent == -2
        assert m.impressions >= 0 and 0 <= m.clicks <= max(m.impressions, 0)


def test_unaligned_start_is_rounded_to_the_millisecond() -> None:
    start = START + timedelta(microseconds=123_456)
    snaps = list(poll_stream(world(), start, 2, seed=1, **CLEAN))
    assert {s.captured_at.microsecond for s in snaps} == {123_000}


# -- the true sequence -------------------------------------------------------------------


def test_true_captured_at_is_strictly_increasing_per_series() -> None:
    by_series: dict[Series, list[datetime]] = defaultdict(list)
    on_time: dict[Series, list[datetime]] = defaultdict(list)
    for ev in chaos_events():
        if ev.delivery == "duplicate":
            continue
        by_series[series(ev.snapshot)].append(ev.snapshot.captured_at)
        if ev.delivery == "on_time":
            on_time[series(ev.snapshot)].append(ev.snapshot.captured_at)
    for times in by_series.values():
        assert len(times) == len(set(times))  # no two true snapshots share an instant
    for times in on_time.values():
        assert all(a < b for a, b in itertools.pairwise(times))


def test_cumulative_is_monotone_within_a_day_and_final_is_the_full_day() -> None:
    per_series: dict[Series, list[SimEvent]] = defaultdict(list)
    for ev in chaos_events():
        if ev.kind in ("today", "final") and ev.delivery != "duplicate":
            per_series[series(ev.snapshot)].append(ev)
    finals = 0
    for key, evs in per_series.items():
        evs.sort(key=lambda e: e.snapshot.captured_at)
        for a, b in itertools.pairwise(evs):
            assert metric_le(a.snapshot.metrics, b.snapshot.metrics), key
        assert [e.kind for e in evs].count("final") <= 1
        if evs[-1].kind == "final":
            finals += 1
            ad = ads()[key[3]]
            assert evs[-1].snapshot.metrics == full_day(ad, key[4])
    assert finals >= len(world().ads)  # 50 h: every ad closed at least one day


def test_today_snapshots_match_the_public_curve_function() -> None:
    for ev in chaos_events()[:5000]:
        if ev.kind != "today":
            continue
        s = ev.snapshot
        day, fraction = local_day(s.captured_at, s.timezone)
        assert day == s.report_date
        assert s.metrics == cumulative(ads()[s.entity_id], day, fraction, SEED)


def test_today_report_date_is_the_account_local_date() -> None:
    for ev in chaos_events():
        s = ev.snapshot
        local = s.captured_at.astimezone(ZoneInfo(s.timezone)).date()
        if ev.kind == "today":
            assert s.report_date == local
        else:
            assert s.report_date < local


# -- the intraday curve ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    ad_index=st.integers(0, 107),
    day=st.dates(date(2023, 1, 1), date(2026, 12, 31)),
    f1=st.floats(0.0, 1.0),
    f2=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**64),
)
def test_cumulative_is_monotone_in_the_day_fraction(
    ad_index: int, day: date, f1: float, f2: float, seed: int
) -> None:
    ad = world().ads[ad_index]
    lo, hi = sorted((f1, f2))
    a, b = cumulative(ad, day, lo, seed), cumulative(ad, day, hi, seed)
    assert metric_le(a, b)
    assert metric_le(b, cumulative(ad, day, 1.0, seed))
    assert cumulative(ad, day, 0.0, seed).is_zero()
    for m in (a, b):
        assert m.clicks <= m.impressions
        assert m.spend <= ad.daily_budget
        assert all(x >= 0 for x in m.as_tuple())
    assert a == cumulative(ad, day, lo, seed)  # deterministic


def test_cumulative_depends_on_seed_and_day_and_rejects_bad_fractions() -> None:
    active = [a for a in world().ads if a.curve.demand > 0]
    ad, day = active[0], date(2024, 5, 1)
    assert cumulative(ad, day, 0.6, 1) != cumulative(ad, day, 0.6, 2)
    assert cumulative(ad, day, 0.6, 1) != cumulative(ad, day + timedelta(days=1), 0.6, 1)
    with pytest.raises(ValueError):
        cumulative(ad, day, 1.01)
    with pytest.raises(ValueError):
        cumulative(ad, day, -0.1)


def test_speedup_compresses_the_day_and_stays_monotone() -> None:
    ad = next(a for a in world().ads if a.curve.demand > 0)
    day = date(2024, 5, 1)
    points = [cumulative(ad, day, f / 500, 1, speedup=24.0) for f in range(501)]
    assert all(metric_le(a, b) for a, b in itertools.pairwise(points))
    # 24 delivery cycles in one day: the day total is about 24 normal days.
    assert points[-1].spend > 20 * cumulative(ad, day, 1.0, 1).spend


def test_paused_ads_report_zeros() -> None:
    w = build_world(4, workspaces=6, campaigns_per_account=6)
    paused = [a for a in w.ads if a.curve.demand == 0]
    assert paused
    for ad in paused:
        assert cumulative(ad, date(2024, 1, 1), 0.7).is_zero()


# -- local midnight rollover -------------------------------------------------------------


def utc_midnight(day: date, tz: str) -> datetime:
    """Independent of the generator: the UTC instant at which ``day`` begins in ``tz``."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz)).astimezone(UTC)


def rollover_check(tz: str, day: date) -> None:
    """Poll 1 ms before and exactly at local midnight starting ``day``."""
    w = build_world(21, workspaces=1, timezones=[tz])
    midnight = utc_midnight(day, tz)
    evs = list(
        poll_events(
            w, midnight - timedelta(milliseconds=1), 2, timedelta(milliseconds=1), seed=2, **CLEAN
        )
    )
    before = [e for e in evs if e.snapshot.captured_at < midnight]
    after = [e for e in evs if e.snapshot.captured_at == midnight]
    yesterday = day - timedelta(days=1)
    assert {e.kind for e in before} == {"today"}
    assert {e.snapshot.report_date for e in before} == {yesterday}
    assert {e.snapshot.report_date for e in after if e.kind == "today"} == {day}
    finals = {e.snapshot.entity_id: e.snapshot for e in after if e.kind == "final"}
    assert set(finals) == {a.id for a in w.ads}
    last = {e.snapshot.entity_id: e.snapshot.metrics for e in before}
    for ad in w.ads:
        final = finals[ad.id]
        assert final.report_date == yesterday
        assert metric_le(last[ad.id], final.metrics)
        assert final.metrics == full_day(ad, yesterday, seed=2)
    # A new local day starts a new series from (almost) zero.
    for e in after:
        if e.kind == "today":
            assert (
                e.snapshot.metrics.spend
                <= Decimal("0.05") * ads_of(w)[e.snapshot.entity_id].daily_budget
            )


def ads_of(w: World) -> dict[str, Ad]:
    return w.ads_by_id


def test_rollover_at_local_midnight_in_a_plus_5_45_zone() -> None:
    day = date(2024, 5, 2)
    assert utc_midnight(day, "Asia/Kathmandu") == datetime(2024, 5, 1, 18, 15, tzinfo=UTC)
    rollover_check("Asia/Kathmandu", day)


@pytest.mark.parametrize(
    ("tz", "day"),
    [
        ("America/New_York", date(2024, 3, 10)),  # 23-hour day starts
        ("America/New_York", date(2024, 3, 11)),  # ... and ends
        ("Europe/Berlin", date(2024, 10, 27)),  # 25-hour day starts
        ("Europe/Berlin", date(2024, 10, 28)),
        ("Australia/Sydney", date(2024, 4, 7)),  # southern-hemisphere fall back
        ("Pacific/Auckland", date(2024, 9, 29)),
        ("Asia/Kolkata", date(2024, 1, 1)),
    ],
)
def test_rollover_at_local_midnight_on_dst_days(tz: str, day: date) -> None:
    rollover_check(tz, day)


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [("America/New_York", date(2024, 3, 10), 23), ("Europe/Berlin", date(2024, 10, 27), 25)],
)
def test_dst_day_runs_the_full_curve_over_its_real_length(tz: str, day: date, hours: int) -> None:
    begin, end = utc_midnight(day, tz), utc_midnight(day + timedelta(days=1), tz)
    assert end - begin == timedelta(hours=hours)
    w = build_world(22, workspaces=1, timezones=[tz])
    polls = hours * 4 + 1  # every 15 min from local midnight to the next one, inclusive
    evs = list(poll_events(w, begin, polls, seed=5, **CLEAN))
    today = [e for e in evs if e.kind == "today" and e.snapshot.report_date == day]
    assert {e.snapshot.captured_at for e in today} == {
        begin + k * timedelta(minutes=15) for k in range(polls - 1)
    }
    _, frac_last = local_day(end - timedelta(milliseconds=1), tz)
    assert 0.99999 < frac_last < 1.0
    finals = [e.snapshot for e in evs if e.kind == "final"]
    assert {f.report_date for f in finals} == {day}
    assert {f.captured_at for f in finals} == {end}
    for f in finals:
        assert f.metrics == full_day(ads_of(w)[f.entity_id], day, seed=5)


@settings(max_examples=60, deadline=None)
@given(
    instant=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)),
    tz=st.sampled_from(["Asia/Kathmandu", "America/New_York", "Europe/Berlin", "Pacific/Auckland"]),
)
def test_local_day_agrees_with_zoneinfo(instant: datetime, tz: str) -> None:
    t = instant.replace(tzinfo=UTC)
    day, fraction = local_day(t, tz)
    assert day == t.astimezone(ZoneInfo(tz)).date()
    begin, end = utc_midnight(day, tz), utc_midnight(day + timedelta(days=1), tz)
    assert fraction == pytest.approx((t - begin) / (end - begin), abs=1e-9)
    assert 0.0 <= fraction < 1.0


# -- restatements ------------------------------------------------------------------------


def previous_reports(
    events: Iterable[SimEvent], w: World | None = None, seed: int = SEED
) -> list[tuple[SimEvent, Metrics]]:
    """Each restatement with what had been reported for its series just before it (or,
    for a day before the stream began, its full-day total)."""
    by_id = (w or world()).ads_by_id
    last: dict[Series, Snapshot] = {}
    out = []
    for ev in sorted(
        (e for e in events if e.delivery != "duplicate"), key=lambda e: e.snapshot.captured_at
    ):
        key = series(ev.snapshot)
        if ev.kind == "restatement":
            prior = last.get(key)
            before = prior.metrics if prior else full_day(by_id[key[3]], key[4], seed)
            out.append((ev, before))
        last[key] = ev.snapshot
    return out


def test_restatements_happen_and_move_values_both_ways() -> None:
    pairs = previous_reports(chaos_events())
    ad_polls = POLLS * len(world().ads)
    assert (
        0.5 * CHAOS["restatement_rate"] * ad_polls
        < len(pairs)
        < 1.5 * CHAOS["restatement_rate"] * ad_polls
    )
    ups = downs = conv_up = conv_down = 0
    for ev, before in pairs:
        after = ev.snapshot.metrics
        s = ev.snapshot
        back = (s.captured_at.astimezone(ZoneInfo(s.timezone)).date() - s.report_date).days
        assert 1 <= back <= 29
        assert after != before
        assert after.clicks <= after.impressions
        diffs = [getattr(after, m) - getattr(before, m) for m in MEASURES]
        ups += any(d > 0 for d in diffs)
        downs += any(d < 0 for d in diffs)
        conv_up += after.conversions > before.conversions
        conv_down += after.conversions < before.conversions
    assert ups and downs
    assert downs > 0.1 * len(pairs)
    assert conv_up > 2 * conv_down  # late conversions mostly add


def test_repeated_restatements_build_on_the_last_reported_value() -> None:
    w = build_world(
        31, workspaces=1, accounts_per_workspace=1, campaigns_per_account=1, ads_per_adset=1
    )
    evs = list(
        poll_events(
            w, START, 400, seed=4, restatement_rate=1.0, duplicate_rate=0, out_of_order_rate=0
        )
    )
    pairs = previous_reports(evs, w, seed=4)
    keys = [series(ev.snapshot) for ev, _ in pairs]
    repeated = {k for k in keys if keys.count(k) > 1}
    assert repeated
    last: dict[Series, Metrics] = {}
    for ev, before in pairs:
        key = series(ev.snapshot)
        if key in last:
            assert before == last[key]
        last[key] = ev.snapshot.metrics


# -- delivery faults ---------------------------------------------------------------------


def test_duplicates_are_identical_and_close_to_the_original() -> None:
    evs = chaos_events()
    originals = sum(e.delivery != "duplicate" for e in evs)
    dups = [i for i, e in enumerate(evs) if e.delivery == "duplicate"]
    rate = CHAOS["duplicate_rate"]
    assert 0.7 * rate * originals < len(dups) < 1.3 * rate * originals
    for i in dups:
        window = [e.snapshot for e in evs[max(0, i - 8) : i]]
        assert evs[i].snapshot in window


def test_out_of_order_deliveries_arrive_after_a_newer_snapshot() -> None:
    evs = chaos_events()
    newest: dict[Series, datetime] = {}
    inversions = 0
    for ev in evs:
        key, at = series(ev.snapshot), ev.snapshot.captured_at
        if ev.delivery == "late":
            assert at < newest[key]
        if key in newest and at < newest[key]:
            inversions += 1
            assert ev.delivery in ("late", "duplicate")
        newest[key] = max(at, newest.get(key, at))
    late = sum(e.delivery == "late" for e in evs)
    today = sum(e.kind == "today" and e.delivery != "duplicate" for e in evs)
    rate = CHAOS["out_of_order_rate"]
    assert 0.7 * rate * today < late < 1.3 * rate * today
    assert inversions >= late


def test_faults_only_reorder_and_repeat_the_true_sequence() -> None:
    clean = list(poll_stream(world(), START, 80, seed=9, restatement_rate=0.05))
    faulty = list(
        poll_stream(
            world(),
            START,
            80,
            seed=9,
            restatement_rate=0.05,
            duplicate_rate=0.1,
            out_of_order_rate=0.1,
        )
    )
    assert len(faulty) > len(clean)
    assert {encode_snapshot(s) for s in faulty} == {encode_snapshot(s) for s in clean}
    assert expected_totals(faulty) == expected_totals(clean)


def test_clean_stream_has_no_faults_and_one_today_per_ad_and_poll() -> None:
    evs = list(poll_events(world(), START, 10, seed=1, **CLEAN))
    assert {e.delivery for e in evs} == {"on_time"}
    assert {e.kind for e in evs} <= {"today", "final"}
    assert sum(e.kind == "today" for e in evs) == 10 * len(world().ads)


def test_simulation_refuses_time_going_backwards() -> None:
    sim = Simulation(world(), seed=1)
    sim.poll_snapshots(START)
    with pytest.raises(ValueError):
        sim.poll_snapshots(START)
    with pytest.raises(ValueError):
        sim.poll_snapshots(START.replace(tzinfo=None))
    with pytest.raises(ValueError):
        Simulation(world(), seed=1, duplicate_rate=1.5)


# -- the oracle --------------------------------------------------------------------------


def test_expected_totals_is_the_latest_captured_snapshot_per_series() -> None:
    evs = chaos_events()
    totals = expected_totals(e.snapshot for e in evs)
    latest: dict[Series, Snapshot] = {}
    for ev in evs:
        key = series(ev.snapshot)
        if key not in latest or ev.snapshot.captured_at >= latest[key].captured_at:
            latest[key] = ev.snapshot
    assert totals == {k: s.metrics for k, s in latest.items()}
    shuffled = [e.snapshot for e in evs]
    random.Random(0).shuffle(shuffled)
    assert expected_totals(shuffled) == totals


def _snap(entity: str, day: date, at: datetime, spend: int) -> Snapshot:
    return Snapshot(
        workspace_id="00000000-0000-4000-8000-000000000000",
        provider="sim",
        account_id="sim-act-1",
        entity_level="ad",
        entity_id=entity,
        campaign_id="sim-cmp-1",
        adset_id=None,
        report_date=day,
        timezone="UTC",
        currency="USD",
        captured_at=at,
        metrics=Metrics(spend=Decimal(spend)),
    )


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.integers(0, 2),
            st.integers(0, 10**6),
            st.integers(0, 10**6),
        ),
        max_size=40,
        unique_by=lambda r: (r[0], r[1], r[2]),
    ),
    seed=st.integers(0, 1000),
)
def test_expected_totals_on_arbitrary_orders(
    rows: list[tuple[str, int, int, int]], seed: int
) -> None:
    base = datetime(2024, 1, 10, tzinfo=UTC)
    snaps = [_snap(e, date(2024, 1, 1 + d), base + timedelta(seconds=s), v) for e, d, s, v in rows]
    random.Random(seed).shuffle(snaps)
    totals = expected_totals(snaps)
    assert len(totals) == len({(e, d) for e, d, _, _ in rows})
    for e, d, _, _ in rows:
        newest = max((r for r in rows if r[0] == e and r[1] == d), key=lambda r: r[2])
        key = ("00000000-0000-4000-8000-000000000000", "sim", "sim-act-1", e, date(2024, 1, 1 + d))
        assert totals[key].spend == newest[3]
