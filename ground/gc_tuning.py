"""Garbage-collector settings for the long-running stream processes.

The pipeline keeps a large live heap of small objects (every entity's series state,
every campaign watch) and allocates millions of short-lived ones per minute.  With
CPython's default thresholds (a young collection every 700 net allocations) the
collector ran ~30 times per second and each older-generation pass walked the whole
heap: about a fifth of the pipeline's CPU in the stop-loss benchmark.  Almost none of
it is cyclic garbage (reference counting frees it), so young collections are made
rarer; full collections still run, just less often.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def tune_gc(gen0_threshold: int) -> None:
    """Young collections every ``gen0_threshold`` net allocations (0 keeps Python's
    defaults); objects alive at startup (modules, settings) are moved out of the
    collector's way for good."""
    gc.freeze()
    if gen0_threshold <= 0:
        return
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, max(gen1, 20), gen2)
    log.info("gc tuned", extra={"thresholds": list(gc.get_threshold()), "frozen": gc.get_freeze_count()})
