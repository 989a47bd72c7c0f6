"""What every edge model shares: a refusal that says why in one line."""

from __future__ import annotations

from pydantic import ValidationError


class Invalid(ValueError):
    """Input refused at an edge; ``reason`` goes to logs and dead-letter headers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def first_error(exc: ValidationError) -> str:
    """The first problem (where and what) and how many there were."""
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return f"{where}: {first['msg']} ({exc.error_count()} error(s))"
