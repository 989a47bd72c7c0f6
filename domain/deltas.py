"""Cumulative "today so far" snapshots -> deltas, per series, exactly once in effect.

A *series* is (workspace, provider, account, entity, report_date).  State is kept per
*entity* (all its report dates together, the Kafka key's grain) so that one stateful
step owns everything about one ad, and old report dates can be evicted in one place.

Rules, each one there for a reason:
- the first snapshot of a series is a delta from zero;
- a later snapshot yields ``new - previous``; negative parts are platform corrections
  and are kept (never clamped);
- a snapshot not newer than the last applied one (a redelivery, or an old snapshot
  overtaken by a newer one) changes nothing: it is *ignored*, and said so;
- the same ``captured_at`` with different numbers is a conflict upstream: *refused*
  (dead-lettered), because picking either silently would make totals depend on order;
- report dates older than the restatement window are *refused*: the state that would
  make their deltas exact has been evicted, and guessing would double count.

Consequence, for every series at every moment: the sum of emitted deltas equals the
latest applied cumulative snapshot.  The 15-minute bucket value is carried in the same
state (cumulative at bucket start), so rollups cost one subtraction, not a window
operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from domain.rollups import bucket_for, local_date
from schemas.insight import Snapshot
from schemas.metrics import NO_METRICS, Metrics

# Meta restates up to 28 days, Google up to the conversion window (<= 30 days).
RESTATEMENT_WINDOW_DAYS = 35


@dataclass(slots=True)
class SeriesState:
    captured_at: datetime
    cumulative: Metrics
    bucket_start: datetime
    bucket_base: Metrics  # cumulative just before the current bucket's first delta


@dataclass(slots=True)
class EntityState:
    series: dict[date, SeriesState] = field(default_factory=dict)
    # Report dates <= closed_through were evicted (or never seen and now too old).
    closed_through: date | None = None
    latest_local_day: date | None = None

    def __deepcopy__(self, memo: dict[int, object]) -> EntityState:
        # Bytewax deep-copies every changed key's state at each snapshot; the generic
        # deepcopy walks Decimals and datetimes that are immutable anyway. Copying the
        # mutable shells only is ~10x cheaper and just as safe.
        return EntityState(
            {
                d: SeriesState(s.captured_at, s.cumulative, s.bucket_start, s.bucket_base)
                for d, s in self.series.items()
            },
            self.closed_through,
            self.latest_local_day,
        )


@dataclass(slots=True)
class Applied:
    """A snapshot that moved its series: its delta and its bucket's new absolute value."""

    snapshot: Snapshot
    delta: Metrics
    bucket_start: datetime
    bucket_value: Metrics
    local_day: date  # captured_at's day in the account's timezone (its "today")


@dataclass(slots=True)
class Ignored:
    snapshot: Snapshot
    reason: str  # "duplicate" | "stale"


@dataclass(slots=True)
class Refused:
    snapshot: Snapshot
    reason: str


Outcome = Applied | Ignored | Refused


def apply_snapshot(
    state: EntityState | None, snap: Snapshot, window_days: int = RESTATEMENT_WINDOW_DAYS
) -> tuple[EntityState, Outcome]:
    """Fold one snapshot into its entity's state. Mutates and returns ``state``."""
    if state is None:
        state = EntityState()
    own_day = local_date(snap.captured_at, snap.timezone)
    oldest_allowed = own_day - timedelta(days=window_days)
    if snap.report_date < oldest_allowed:
        return state, Refused(
            snap,
            f"report_date {snap.report_date} is more than {window_days} days before "
            f"captured_at's local day {own_day}: outside the restatement window",
        )
    if state.closed_through is not None and snap.report_date <= state.closed_through:
        return state, Refused(
            snap,
            f"series for report_date {snap.report_date} was closed (state evicted through "
            f"{state.closed_through}); a delta can no longer be computed exactly",
        )

    bucket = bucket_for(snap.captured_at, snap.report_date, snap.timezone)
    series = state.series.get(snap.report_date)
    if series is None:
        delta = snap.metrics
        series = SeriesState(snap.captured_at, snap.metrics, bucket, NO_METRICS)
        state.series[snap.report_date] = series
    else:
        if snap.captured_at < series.captured_at:
            return state, Ignored(snap, "stale")
        if snap.captured_at == series.captured_at:
            if snap.metrics == series.cumulative:
                return state, Ignored(snap, "duplicate")
            return state, Refused(
                snap,
                f"conflicting snapshot: captured_at {snap.captured_at.isoformat()} was already "
                "applied with different values",
            )
        delta = snap.metrics - series.cumulative
        if bucket != series.bucket_start:
            series.bucket_base = series.cumulative
            series.bucket_start = bucket
        series.cumulative = snap.metrics
        series.captured_at = snap.captured_at

    applied = Applied(snap, delta, bucket, series.cumulative - series.bucket_base, own_day)
    if state.latest_local_day is None or own_day > state.latest_local_day:
        state.latest_local_day = own_day
        _evict(state, own_day - timedelta(days=window_days + 1))
    return state, applied


def _evict(state: EntityState, through: date) -> None:
    """Drop series that can no longer receive a snapshot (see the window rule)."""
    old = [d for d in state.series if d <= through]
    for d in old:
        del state.series[d]
    if state.closed_through is None or through > state.closed_through:
        state.closed_through = through
