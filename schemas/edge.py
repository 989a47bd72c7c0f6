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
    # A location can name an unknown field, as long as the input allows: shortened.
    where = ".".join(str(p) if len(str(p)) <= 40 else f"{str(p)[:40]}…" for p in first["loc"]) or "message"
    return f"{where}: {first['msg']} ({exc.error_count()} error(s))"


def preview(raw: bytes | str, limit: int = 64) -> str:
    """A short quoted look at untrusted text, for a reason or a log line.  Never the whole
    of a large key or value: reasons travel in dead-letter headers, which are bounded, and
    a 600 KB key repeated in its own refusal doubled the dead letter."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    if len(text) <= limit:
        return repr(text)
    unit = "bytes" if isinstance(raw, bytes) else "characters"
    return f"{text[:limit]!r}… ({len(raw)} {unit})"
