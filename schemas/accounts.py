"""The one stored spelling of an ad account id, from the spellings the platforms show.

People copy ids from the platforms' own screens: Meta writes ``act_123`` (the Graph API
node) and Google ``123-456-7890``.  Both are accepted everywhere an id comes in (CLI,
API), and one canonical form is stored and published: digits only, which is what the
pollers have always put in snapshots' ``account_id`` and the Kafka key, so existing
rows and series keep their key.
"""

from __future__ import annotations

import re

MAX_INPUT_CHARS = 64
_DIGITS = re.compile(r"[0-9]{1,32}")
_GOOGLE_DASHED = re.compile(r"[0-9]{3}-[0-9]{3}-[0-9]{4}")


def canonical_account_id(provider: str, raw: str) -> str:
    """``act_123`` / ``123`` -> ``123`` (Meta); ``123-456-7890`` / ``1234567890`` ->
    ``1234567890`` (Google).  Raises ``ValueError`` naming the accepted spellings
    (never echoing more than a bounded prefix of the input)."""
    if len(raw) > MAX_INPUT_CHARS:
        raise ValueError(f"account id longer than {MAX_INPUT_CHARS} characters")
    if provider == "meta":
        digits = raw.removeprefix("act_")
        if _DIGITS.fullmatch(digits):
            return digits
        raise ValueError("meta ad account id must be digits, optionally written act_<digits> (e.g. act_123)")
    if provider == "google":
        if _GOOGLE_DASHED.fullmatch(raw):
            return raw.replace("-", "")
        if _DIGITS.fullmatch(raw):
            return raw
        raise ValueError("google customer id must be digits, optionally written 123-456-7890")
    raise ValueError(f"unknown provider {provider[:20]!r}")
