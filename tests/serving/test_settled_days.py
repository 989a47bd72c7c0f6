"""The pure parts of reading a period as settled days (reusable) plus hot days (read
each time): the split, the sums' merge and the ranking, and the versioned cache."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.kpis import Sums, add_sums, top_by_spend
from serving.timeframes import Period, split_hot
from serving.versioned_cache import VersionedCache

TODAY = date(2026, 3, 15)


def days(p: Period | None) -> list[date]:
    return [] if p is None else [p.start + timedelta(days=i) for i in range(p.days)]


@given(st.integers(-40, 5), st.integers(0, 45), st.integers(1, 4))
def test_split_covers_the_period_once_and_only_hot_days_are_hot(offset: int, length: int, hot_days: int) -> None:
    p = Period(TODAY + timedelta(days=offset - length), TODAY + timedelta(days=offset))
    settled, hot = split_hot(p, TODAY, hot_days)
    assert days(settled) + days(hot) == days(p)
    first_hot = TODAY - timedelta(days=hot_days - 1)
    assert all(d < first_hot for d in days(settled))
    assert all(d >= first_hot for d in days(hot))


def test_split_of_named_periods() -> None:
    y = TODAY - timedelta(days=1)
    assert split_hot(Period(TODAY, TODAY), TODAY) == (None, Period(TODAY, TODAY))
    assert split_hot(Period(y, y), TODAY) == (None, Period(y, y))
    month = Period(TODAY - timedelta(days=29), TODAY)
    assert split_hot(month, TODAY) == (Period(month.start, y - timedelta(days=1)), Period(y, TODAY))
    old = Period(date(2026, 1, 1), date(2026, 1, 31))
    assert split_hot(old, TODAY) == (old, None)


keys = st.tuples(st.sampled_from(["google", "meta"]), st.sampled_from(["a1", "a2"]),
                 st.text("cx", min_size=1, max_size=3))
sums = st.builds(lambda s, i: Sums(Decimal(s) / 4, i, i // 2, Decimal(i % 5), Decimal(s)),
                 st.integers(0, 40), st.integers(0, 1000))
rows = st.lists(st.tuples(keys, sums), max_size=30)


@given(rows, st.integers(1, 12))
def test_merged_top_equals_the_top_of_all_rows_summed_at_once(all_rows: list[tuple[tuple[str, str, str], Sums]],
                                                               limit: int) -> None:
    """Two ranges read apart and merged rank exactly like one read over both (ties in
    key order), whatever the split."""
    half = len(all_rows) // 2
    first: dict[tuple[str, str, str], Sums] = {}
    second: dict[tuple[str, str, str], Sums] = {}
    for i, (key, s) in enumerate(all_rows):
        part = first if i < half else second
        part[key] = part.get(key, Sums()) + s
    frozen = dict(first)
    merged = add_sums(first, second)
    assert first == frozen  # a cached base is never modified
    # Oracle: sum every row per key, order by spend desc then key, cut.
    whole: dict[tuple[str, str, str], list[Sums]] = {}
    for key, s in all_rows:
        whole.setdefault(key, []).append(s)
    totals = {k: Sums(sum((s.spend for s in v), Decimal(0)), sum(s.impressions for s in v),
                      sum(s.clicks for s in v), sum((s.conversions for s in v), Decimal(0)),
                      sum((s.revenue for s in v), Decimal(0))) for k, v in whole.items()}
    expected = sorted(totals.items(), key=lambda kv: (-kv[1].spend, kv[0]))[:limit]
    assert top_by_spend(merged, limit) == expected


def test_cache_answers_only_for_the_same_version() -> None:
    c = VersionedCache[str](max_entries=2)
    c.put("k", (1,), "one")
    assert c.get("k", (1,)) == "one"
    assert c.get("k", (2,)) is None
    assert c.get("k", None) is None
    c.put("k", None, "unknown")  # an unknown version is never stored
    assert c.get("k", (1,)) == "one"
    assert (c.hits, c.misses) == (2, 1)  # an unknown version is not a lookup


def test_cache_evicts_least_recently_used_by_count_and_weight() -> None:
    c = VersionedCache[list[int]](max_entries=3, max_weight=5, weigh=len)
    c.put("a", 1, [1, 2])
    c.put("b", 1, [1, 2])
    assert c.get("a", 1) == [1, 2]  # a is now the most recent
    c.put("c", 1, [1, 2])  # weight 6 > 5: b goes
    assert c.get("b", 1) is None and c.get("a", 1) == [1, 2] and c.get("c", 1) == [1, 2]
    c.put("huge", 1, list(range(6)))  # heavier than the whole cache: not kept, nothing evicted
    assert c.get("huge", 1) is None and len(c) == 2
    c.put("a", 2, [1])  # replacing an entry releases its weight
    c.put("d", 1, [1, 2])
    assert len(c) == 3 and c.get("a", 2) == [1] and c.get("c", 1) == [1, 2]
