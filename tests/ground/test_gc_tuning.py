"""The pipeline processes' collector settings (ground.gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from ground.gc_tuning import tune_gc
from ground.settings import Settings


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_young_collections_are_made_rarer(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(50_000)
    assert gc.get_threshold() == (50_000, 20, 10)
    assert gc.get_freeze_count() > 0  # startup objects moved out of the collector's way


def test_zero_keeps_pythons_thresholds(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(0)
    assert gc.get_threshold() == (700, 10, 10)


def test_the_setting_refuses_negative_thresholds() -> None:
    assert Settings().gc_gen0_threshold == 50_000
    with pytest.raises(ValidationError, match="must be >= 0"):
        Settings(gc_gen0_threshold=-1)
