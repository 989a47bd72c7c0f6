"""Deltas and 15-minute buckets under duplicates, reordering, restatements, rollover."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.deltas import Applied, EntityState, Ignored, Refused, apply_snapshot
from domain.rollups import day_bounds
from pipelines import codecs
from schemas.insight import Snapshot
from schemas.metrics import NO_METRICS, Metrics
from tests.factories import metrics, snap

codecs.register()  # recovery snapshots pickle series states with the pipeline's codec

T0 = datetime(2026, 3, 7, 20, 0, tzinfo=UTC)  # a day before US DST starts

metric_values = st.builds(
    Metrics,
    st.decimals(min_value=0, max_value=10_000, places=2),
    st.integers(0, 10**6),
    st.integers(0, 10**4),
    st.decimals(min_value=0, max_value=500, places=2),
    st.decimals(min_value=0, max_value=50_000, places=2),
)
zones = st.sampled_from(["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Sydney", "Pacific/Chatham"])


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Snapshot], list[Snapshot]]:
    """(true history, delivered sequence) for a few entities over ~2 days of polls."""
    tz = draw(zones)
    true: list[Snapshot] = []
    for entity in draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)):
        t = T0 + timedelta(minutes=draw(st.integers(0, 600)))
        for _ in range(draw(st.integers(1, 25))):
            t += timedelta(minutes=draw(st.integers(1, 240)))
            local_day = t.astimezone(ZoneInfo(tz)).date()
            # Today's value, or a restatement of one of the previous 3 days.
            back = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
            true.append(snap(t, local_day - timedelta(days=back), draw(metric_values), entity=entity, tz=tz))
    delivered = list(true)
    draw(st.randoms()).shuffle(delivered) if draw(st.booleans()) else None
    for _ in range(draw(st.integers(0, 5))):  # redeliveries
        delivered.insert(draw(st.integers(0, len(delivered))), draw(st.sampled_from(true)))
    return true, delivered


def series_of(s: Snapshot) -> tuple[str, date]:
    return (s.entity_key, s.report_date)


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_sum_of_deltas_equals_latest_snapshot_at_every_moment(case: tuple[list[Snapshot], list[Snapshot]]) -> None:
    _, delivered = case
    states: dict[str, EntityState | None] = defaultdict(lambda: None)
    delta_sum: dict[tuple[str, date], Metrics] = defaultdict(lambda: NO_METRICS)
    latest: dict[tuple[str, date], Snapshot] = {}
    for s in delivered:
        states[s.entity_key], out = apply_snapshot(states[s.entity_key], s)
        key = series_of(s)
        if isinstance(out, Applied):
            delta_sum[key] = delta_sum[key] + out.delta
        else:
            assert isinstance(out, Ignored)
        if key not in latest or s.captured_at > latest[key].captured_at:
            latest[key] = s
        assert delta_sum[key] == latest[key].metrics


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_buckets_partition_each_report_day(case: tuple[list[Snapshot], list[Snapshot]]) -> None:
    _, delivered = case
    states: dict[str, EntityState | None] = defaultdict(lambda: None)
    buckets: dict[tuple[str, date], dict[datetime, Metrics]] = defaultdict(dict)
    latest: dict[tuple[str, date], Snapshot] = {}
    for s in delivered:
        states[s.entity_key], out = apply_snapshot(states[s.entity_key], s)
        key = series_of(s)
        if isinstance(out, Applied):
            start, end = day_bounds(s.report_date, s.timezone)
            assert start <= out.bucket_start < end
            assert out.bucket_start.minute % 15 == 0 and out.bucket_start.second == 0
            if s.captured_at >= end:
                assert out.bucket_start == end - timedelta(minutes=15)
            buckets[key][out.bucket_start] = out.bucket_value  # absolute: last write wins
        if key not in latest or s.captured_at > latest[key].captured_at:
            latest[key] = s
    for key, per_bucket in buckets.items():
        total = NO_METRICS
        for m in per_bucket.values():
            total = total + m
        assert total == latest[key].metrics


def test_first_snapshot_is_a_delta_from_zero_and_negative_deltas_are_kept() -> None:
    day = date(2026, 11, 2)
    t = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    st_, a = apply_snapshot(None, snap(t, day, metrics("10.50", 100, 5, "1", "20")))
    assert isinstance(a, Applied) and a.delta == metrics("10.50", 100, 5, "1", "20")
    st_, b = apply_snapshot(st_, snap(t + timedelta(hours=1), day, metrics("9.00", 90, 5, "2", "45.5")))
    assert isinstance(b, Applied)
    assert b.delta == Metrics(Decimal("-1.50"), -10, 0, Decimal("1"), Decimal("25.5"))


def test_redelivery_and_stale_snapshots_change_nothing() -> None:
    day = date(2026, 11, 2)
    t = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    first = snap(t, day, metrics("1"))
    second = snap(t + timedelta(minutes=15), day, metrics("2"))
    st_, _ = apply_snapshot(None, first)
    st_, _ = apply_snapshot(st_, second)
    st_, dup = apply_snapshot(st_, second)
    st_, old = apply_snapshot(st_, first)
    assert isinstance(dup, Ignored) and dup.reason == "duplicate"
    assert isinstance(old, Ignored) and old.reason == "stale"
    assert st_.series[day].cumulative == metrics("2")


def test_same_capture_time_with_other_numbers_is_refused() -> None:
    day = date(2026, 11, 2)
    t = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    st_, _ = apply_snapshot(None, snap(t, day, metrics("1")))
    st_, out = apply_snapshot(st_, snap(t, day, metrics("3")))
    assert isinstance(out, Refused) and "conflicting" in out.reason
    assert st_.series[day].cumulative == metrics("1")


def test_rollover_at_local_midnight_starts_a_new_series() -> None:
    tz = "Asia/Kathmandu"  # UTC+5:45: local midnight is 18:15 UTC
    before = datetime(2026, 11, 2, 18, 10, tzinfo=UTC)
    after = datetime(2026, 11, 2, 18, 20, tzinfo=UTC)
    st_, _a = apply_snapshot(None, snap(before, date(2026, 11, 2), metrics("50"), tz=tz))
    # Final snapshot of the old day, captured after its end: booked in its last bucket.
    st_, late = apply_snapshot(st_, snap(after, date(2026, 11, 2), metrics("52"), tz=tz))
    st_, new = apply_snapshot(st_, snap(after, date(2026, 11, 3), metrics("1"), tz=tz))
    assert isinstance(late, Applied) and isinstance(new, Applied)
    assert late.delta == metrics("2")
    assert late.bucket_start == datetime(2026, 11, 2, 18, 0, tzinfo=UTC)
    assert new.delta == metrics("1")  # from zero, not from yesterday's 52
    assert new.bucket_start == datetime(2026, 11, 2, 18, 15, tzinfo=UTC)


def test_dst_day_has_23_hours_of_buckets() -> None:
    start, end = day_bounds(date(2026, 3, 8), "America/New_York")
    assert end - start == timedelta(hours=23)


def test_report_dates_outside_the_window_are_refused_not_guessed() -> None:
    t = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    st_, ok = apply_snapshot(None, snap(t, date(2026, 11, 1), metrics("5")), window_days=35)
    assert isinstance(ok, Applied)
    st_, too_old = apply_snapshot(st_, snap(t, date(2026, 10, 1), metrics("5")), window_days=35)
    assert isinstance(too_old, Refused) and "restatement window" in too_old.reason
    # 40 days later the entity's old series are evicted; a very late delivery for one is
    # refused instead of being re-counted from zero.
    later = t + timedelta(days=40)
    st_, _ = apply_snapshot(st_, snap(later, date(2026, 12, 30), metrics("1")), window_days=35)
    assert date(2026, 11, 1) not in st_.series
    st_, late = apply_snapshot(
        st_, snap(t + timedelta(hours=1), date(2026, 11, 1), metrics("6")), window_days=35
    )
    assert isinstance(late, Refused) and "closed" in late.reason


def test_state_deepcopy_is_independent() -> None:
    import copy

    t = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    st_, _ = apply_snapshot(None, snap(t, date(2026, 11, 2), metrics("1")))
    frozen = copy.deepcopy(st_)
    apply_snapshot(st_, snap(t + timedelta(hours=1), date(2026, 11, 2), metrics("7")))
    assert frozen.series[date(2026, 11, 2)].cumulative == metrics("1")
    assert st_.series[date(2026, 11, 2)].cumulative == metrics("7")


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_state_survives_a_pickle_round_trip(case: tuple[list[Snapshot], list[Snapshot]]) -> None:
    """Recovery snapshots are pickles: a restored state must behave exactly like the live one."""
    import pickle

    _, delivered = case
    live: dict[str, EntityState | None] = defaultdict(lambda: None)
    for i, s in enumerate(delivered):
        live[s.entity_key], _out = apply_snapshot(live[s.entity_key], s)
        if i == len(delivered) // 2:
            restored = {k: pickle.loads(pickle.dumps(v)) for k, v in live.items()}
            for k, v in live.items():
                assert restored[k] == v
            live = defaultdict(lambda: None, restored)
    for v in live.values():
        assert pickle.loads(pickle.dumps(v)) == v
