"""Pure report-run rules: status reading and range splitting."""

from __future__ import annotations

from datetime import date

from adapters.meta.reports import run_state, split


def test_run_states() -> None:
    assert [run_state(s) for s in ("Job Completed", "Job Failed", "Job Skipped", "Job Running", "Job Not Started", None)] == [
        "done", "failed", "failed", "running", "running", "running"]


def test_split_halves_cover_the_range_exactly() -> None:
    a, b = split(date(2026, 11, 1), date(2026, 11, 28)) or ((None, None), (None, None))
    assert a == (date(2026, 11, 1), date(2026, 11, 14)) and b == (date(2026, 11, 15), date(2026, 11, 28))
    assert split(date(2026, 11, 1), date(2026, 11, 2)) == ((date(2026, 11, 1),) * 2, (date(2026, 11, 2),) * 2)
    assert split(date(2026, 11, 1), date(2026, 11, 1)) is None
