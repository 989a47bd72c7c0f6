"""What the stop-loss rules keep about one campaign between snapshots: its watch.

Plain data; the step that folds snapshots into it is :mod:`domain.stoploss.watch`.
Bytewax deep-copies (``__deepcopy__`` here, the cheap way) and pickles (the compact
codec, ``pipelines.codecs``) every touched campaign's watch at each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from schemas.metrics import Metrics


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
