"""Pure rules for Meta asynchronous report runs (``AdReportRun``).

Large reads (the 28-day restatement window, backfills) go through async report runs;
a run that fails or is skipped is split into two halves and retried, down to one day.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

DONE = "Job Completed"
FAILED = frozenset({"Job Failed", "Job Skipped"})
RUNNING = frozenset({"Job Not Started", "Job Started", "Job Running"})

RunState = Literal["done", "failed", "running"]


def run_state(async_status: object) -> RunState:
    """Unknown statuses count as running: the poll limit ends a run that never settles."""
    if async_status == DONE:
        return "done"
    if async_status in FAILED:
        return "failed"
    return "running"


def split(since: date, until: date) -> tuple[tuple[date, date], tuple[date, date]] | None:
    """Two halves of a failed range, or None when it is a single day (cannot split)."""
    if since >= until:
        return None
    mid = since + timedelta(days=(until - since).days // 2)
    return (since, mid), (mid + timedelta(days=1), until)
