"""The one way metricx processes stop: Ctrl-C and SIGTERM set a flag, and loops finish
their current step before they return.

Every long-running command (pipeline, pollers, notifier, the demo) asks for the flag
here and passes it down; nothing else installs signal handlers.  Why a flag and not
``KeyboardInterrupt``: an exception raised at an arbitrary line cuts a flush or a commit
short (under ``make demo`` Ctrl-C reached the simulated poller twice and the second one
interrupted its flush), where a flag lets the loop end at a point it chose.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def stop_on_signals(*, second_interrupts: bool = False,
                    on_stop: Callable[[str], None] | None = None) -> threading.Event:
    """An event set by SIGINT or SIGTERM.  ``on_stop`` is told the first signal's name;
    with ``second_interrupts`` a second signal raises KeyboardInterrupt, for a graceful
    stop that a user can still cut short (the pipeline: the next start replays the open
    epoch).  Signals reach only the main thread: called from another one, the event is
    returned without handlers (its caller sets it)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return stop

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if second_interrupts and stop.is_set():
            raise KeyboardInterrupt
        if on_stop is not None and not stop.is_set():
            on_stop(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return stop


def interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a KeyboardInterrupt (Bytewax re-raises one
    from inside a step wrapped in its own error)."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
