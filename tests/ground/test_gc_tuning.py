"""The pipeline processes' collector settings (ground.gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from ground.gc_tuning import tune_gc
from ground.settings import ConfigError, PipelineSettings, load_settings


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


def test_the_setting_refuses_negative_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default is the documented one whatever this machine's environment says.
    monkeypatch.delenv("METRICX_GC_GEN0_THRESHOLD", raising=False)
    assert PipelineSettings().gc_gen0_threshold == 50_000
    with pytest.raises(ValidationError, match="must be >= 0"):
        PipelineSettings(gc_gen0_threshold=-1)
    monkeypatch.setenv("METRICX_GC_GEN0_THRESHOLD", "-1")
    with pytest.raises(ConfigError, match="METRICX_GC_GEN0_THRESHOLD: must be >= 0"):
        load_settings()
