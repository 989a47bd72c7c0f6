"""Ctrl-C and SIGTERM as a flag, for loops that finish their current step before exiting."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def stop_on_signals(*, second_interrupts: bool = False,
                    on_stop: Callable[[str], None] | None = None) -> threading.Event:
    """An event set by SIGINT or SIGTERM (call from the main thread).  ``on_stop`` is
    told the first signal's name; with ``second_interrupts`` a second signal raises
    KeyboardInterrupt, for a graceful stop that a user can still cut short."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if second_interrupts and stop.is_set():
            raise KeyboardInterrupt
        if on_stop is not None and not stop.is_set():
            on_stop(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return stop
