"""What each workspace's rules cost the shared pipeline, and when that is too much.

Every tenant's snapshots go through the same stop-loss step, one after another: a
workspace whose rules take 25 ms per snapshot makes every other tenant's snapshots
wait (another tenant's snapshot waited 3.0 s instead of 0.5 s).  The API's limits
(``schemas.rules``) bound a book's size; this bounds its *cost*, whatever causes it
(conditions, aggregate hours windows over large campaigns, a rule published around
the API).

The step measures each evaluation of a snapshot (two reads of a monotonic
nanosecond clock and a dict lookup: ~0.35 µs here, against ~15-45 µs of evaluation and
far more for the rest of a snapshot's way through the pipeline) and charges it to the
snapshot's workspace.  The verdict is a median, not a sum: of a workspace's
``window`` latest evaluations, once more than half took longer than
``per_snapshot_ns``, its book is over budget, and the rule book disables it
(``RuleBook.charge``) with a reason the merchant sees.  A median ignores the odd slow
evaluation (a garbage collection, the process descheduled), which a sum or a maximum
would blame on whoever was unlucky; a book that is slow on most snapshots is caught
after ``window // 2 + 1`` of them (17 by default: under half a second at 25 ms each).
A large workspace is not penalised for its volume, only for what each of its
snapshots costs.

The budget, 2 ms per snapshot, is ~130x what an agency's book costs here (15 µs for
four rules) and ~5x the worst book the API's limits allow (50 rules of 50 conditions:
~0.4 ms): a book within the limits is disabled only if something else makes it slow.

Pure and deterministic: the clock is injectable, and :meth:`CostMeter.charge` takes
the measured cost, so tests decide what each evaluation cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], int]  # nanoseconds, monotonic


@dataclass(frozen=True, slots=True)
class Budget:
    per_snapshot_ns: int = 2_000_000
    window: int = 32  # evaluations judged together

    def __post_init__(self) -> None:
        if self.per_snapshot_ns <= 0 or self.window < 1:
            raise ValueError("a budget needs a positive cost and window")


class CostMeter:
    """Per workspace: how many of its latest evaluations went over the budget."""

    def __init__(self, budget: Budget | None = None, clock: Clock = time.perf_counter_ns) -> None:
        self.budget = budget or Budget()
        self.clock = clock
        self._limit = self.budget.per_snapshot_ns
        self._window = self.budget.window
        self._majority = self.budget.window // 2 + 1
        # workspace -> [evaluations, over budget, their total ns] of the current window
        self._windows: dict[str, list[int]] = {}

    def charge(self, workspace_id: str, cost_ns: int) -> str | None:
        """Record one evaluation; the reason, once the workspace is over budget (its
        window starts afresh).  On the hot path: a dict lookup and a few additions.
        Several workers may charge at once: a lost count only delays a verdict."""
        w = self._windows.get(workspace_id)
        if w is None:
            w = self._windows[workspace_id] = [0, 0, 0]
        w[0] += 1
        w[2] += cost_ns
        if cost_ns > self._limit:
            w[1] += 1
            if w[1] >= self._majority:
                self._windows.pop(workspace_id, None)
                return self._reason(w)
        if w[0] >= self._window:
            self._windows.pop(workspace_id, None)
        return None

    def forget(self, workspace_id: str) -> None:
        self._windows.pop(workspace_id, None)

    def _reason(self, w: list[int]) -> str:
        n, over, total = w
        return (f"rule evaluation over budget: {over} of this workspace's last {n} evaluated snapshots took more "
                f"than {duration(self._limit)} each (on average {duration(total // n)}), slowing every tenant's data; "
                "the pipeline stopped evaluating the workspace's rules. Make them cheaper (fewer conditions, "
                "narrower scopes, no hours windows on large ad sets or campaigns), then resume them")


def duration(ns: int) -> str:
    """``2 ms``, ``12.5 ms``, ``0.35 µs``: readable at any budget."""
    value, unit = (ns / 1_000_000, "ms") if ns >= 100_000 else (ns / 1_000, "µs")
    return f"{value:.3f}".rstrip("0").rstrip(".") + " " + unit
