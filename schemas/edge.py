"""What every edge shares: a refusal that says why in one line; the API's text, date
and JSON-number policies (one definition each, used by every model and parameter)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationError


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


# ---- what every API edge model and parameter shares ------------------------------------
#
# Text: PostgreSQL cannot store a NUL character (text or jsonb), so a NUL that got past
# the edge surfaced as a database error (a 500).  Every free-text field and parameter
# is ``Text`` (or adds ``NO_NUL`` to its own constraints) and refuses it as a 422.

NUL_REFUSED = "must not contain NUL characters"


def refuse_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_REFUSED)
    return value


NO_NUL = AfterValidator(refuse_nul)
Text = Annotated[str, NO_NUL]

# Dates: one range for every date the API takes (report dates, ``since`` instants).  It
# keeps date arithmetic (a previous period, a day after) and the database's date types
# far from their limits (year 1 overflowed Python's date), and is wider than any
# ad-platform history.
MIN_DATE = date(2000, 1, 1)
MAX_DATE = date(2099, 12, 31)
DATE_RANGE = f"must be between {MIN_DATE.isoformat()} and {MAX_DATE.isoformat()}"


def date_in_range(value: date) -> date:
    if not MIN_DATE <= value <= MAX_DATE:
        raise ValueError(DATE_RANGE)
    return value


def datetime_in_range(value: datetime) -> datetime:
    # The local calendar date, without converting zones: converting 9999-12-31T23:00-05:00
    # to UTC overflows, and the bound only has to keep values far from the limits.
    date_in_range(value.date())
    return value


ApiDate = Annotated[date, AfterValidator(date_in_range)]
ApiDateTime = Annotated[datetime, AfterValidator(datetime_in_range)]

# JSON numbers: read exactly (a fraction becomes a Decimal, never a float), with at most
# MAX_NUMBER_CHARS characters; NaN, Infinity and -Infinity (which Python's reader takes,
# and which then could not even be echoed in a 422) are malformed JSON.
MAX_NUMBER_CHARS = 40
NUMBER_REFUSED = "numbers must be finite (no NaN or Infinity)"


class _NumberRefused(ValueError):
    pass


def _constant(name: str) -> Any:
    raise _NumberRefused(f"{NUMBER_REFUSED}: {name}")


def _bounded(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise _NumberRefused(f"a number may have at most {MAX_NUMBER_CHARS} characters")
        return convert(text)

    return parse


_INT, _FRACTION = _bounded(int), _bounded(Decimal)


def loads_json(data: str | bytes) -> Any:
    """``json.loads`` under the API's number policy; a refusal is a
    ``json.JSONDecodeError`` like any other malformed body."""
    try:
        return json.loads(data, parse_constant=_constant, parse_int=_INT, parse_float=_FRACTION)
    except _NumberRefused as exc:
        doc = data.decode(errors="replace") if isinstance(data, bytes) else data
        raise json.JSONDecodeError(str(exc), doc, 0) from None
