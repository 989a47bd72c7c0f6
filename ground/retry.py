"""Capped exponential backoff, and waiting for a dependency at start-up.

Why the long-running processes wait instead of exiting when a dependency is down: under
a supervisor (systemd, Kubernetes, compose) an exit is a restart, and a restart while
the database is away is another exit — a crash loop that floods the logs and hides the
one line that says what is wrong.  Waiting keeps one process up that says, with backoff,
what it is waiting for (in its log and in ``/readyz``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ground.metrics import HEALTH, Health

log = logging.getLogger("metricx.health")


@dataclass
class Backoff:
    """Delays base, 2·base, 4·base, ... up to ``cap``; :meth:`reset` after a success."""

    base_s: float = 0.5
    cap_s: float = 10.0
    attempt: int = 0

    def next(self) -> float:
        delay = float(min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 30)))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def wait_until_reachable(
    checks: dict[str, Callable[[], None]],
    *,
    backoff: Backoff | None = None,
    stop: threading.Event | None = None,
    health: Health = HEALTH,
) -> bool:
    """Run every check (each raises ``ConnectionError`` with a message that names the
    setting) until all pass; False if ``stop`` was set first."""
    backoff = backoff or Backoff()
    stop = stop or threading.Event()
    pending = dict(checks)
    while pending:
        for name, check in list(pending.items()):
            try:
                check()
            except ConnectionError as exc:
                health.down(name, str(exc))
                continue
            health.up(name)
            del pending[name]
        if pending:
            delay = backoff.next()
            log.warning("waiting for dependencies", extra={"waiting_for": sorted(pending), "retry_in_s": delay})
            if stop.wait(delay):
                return False
    return True
