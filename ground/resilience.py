"""Pure retry arithmetic shared by the pollers: backoff and a per-account circuit breaker.

No I/O here: time is passed in, randomness is passed in, so every decision is a unit test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def backoff_delay(attempt: int, *, base_s: float = 2.0, cap_s: float = 300.0, jitter: float | None = None) -> float:
    """Exponential backoff with "equal jitter": half the step is fixed, half random.

    Why equal jitter: a fixed floor guarantees we actually back off (full jitter can pick
    ~0 and hammer a throttled account), the random half spreads many accounts apart.
    ``jitter`` in [0, 1) is injectable for tests; ``attempt`` counts from 0.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    step = min(cap_s, base_s * (2**attempt))
    r = random.random() if jitter is None else jitter
    if not 0.0 <= r < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    return float(step / 2 + (step / 2) * r)


@dataclass
class CircuitBreaker:
    """Per-account breaker: after a quota error the account is not called until
    ``open_until`` (the platform's own retry delay), so one exhausted customer never
    burns operations or blocks others.  ``now`` is seconds on any monotonic clock."""

    open_until: float = 0.0
    failures: int = 0

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def trip(self, now: float, retry_after_s: float) -> None:
        self.failures += 1
        self.open_until = max(self.open_until, now + max(0.0, retry_after_s))

    def reset(self) -> None:
        self.failures = 0
        self.open_until = 0.0
