"""Pure throttle decisions from Meta's usage headers and error codes.

Meta reports how close an app / ad account is to its limits in response headers
(JSON): ``x-business-use-case-usage`` (per business id, a list of usages with
``call_count``, ``total_cputime``, ``total_time`` percentages and
``estimated_time_to_regain_access`` in minutes), ``x-ad-account-usage``
(``acc_id_util_pct``, ``reset_time_duration`` seconds), ``x-fb-ads-insights-throttle``
(``app_id_util_pct``, ``acc_id_util_pct``) and ``x-app-usage``.  Well-behaved clients slow
down near 85 % and pause near 95 %, and pause for the regain time when one is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SLOW_AT_PCT = 85.0
PAUSE_AT_PCT = 95.0
SLOW_DELAY_S = 60.0
DEFAULT_PAUSE_S = 300.0

REAUTH_CODES = frozenset({190})
THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})

USAGE_HEADERS = (
    "x-business-use-case-usage",
    "x-ad-account-usage",
    "x-fb-ads-insights-throttle",
    "x-app-usage",
)


@dataclass(frozen=True)
class ThrottleDecision:
    action: Literal["go", "slow", "pause"]
    delay_s: float
    usage_pct: float
    reason: str
    # Meta named a time to regain access: calls before it are refused, whatever the loop.
    blocked: bool = False


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _usages(name: str, payload: Any) -> tuple[list[float], float]:
    """(usage percentages, regain seconds) found in one header's JSON."""
    pcts: list[float] = []
    regain_s = 0.0

    def visit(d: Mapping[str, Any]) -> None:
        nonlocal regain_s
        for k, v in d.items():
            if k in ("call_count", "total_cputime", "total_time", "acc_id_util_pct", "app_id_util_pct"):
                n = _num(v)
                if n is not None:
                    pcts.append(n)
            elif k == "estimated_time_to_regain_access":
                n = _num(v)
                if n is not None:
                    regain_s = max(regain_s, n * 60.0)
    if isinstance(payload, Mapping):
        if name == "x-business-use-case-usage":
            for lst in payload.values():
                for item in lst if isinstance(lst, list) else []:
                    if isinstance(item, Mapping):
                        visit(item)
        else:
            visit(payload)
    return pcts, regain_s


def decide(headers: Mapping[str, str]) -> ThrottleDecision:
    """Turn usage headers into go / slow / pause.  Unparseable headers count as no
    information (never a crash: the response itself was fine)."""
    lower = {k.lower(): v for k, v in headers.items()}
    top = 0.0
    regain_s = 0.0
    reset_s = 0.0
    for name in USAGE_HEADERS:
        raw = lower.get(name)
        if not raw:
            continue
        try:
            payload = json.loads(raw)
        except (ValueError, TypeError):
            continue
        pcts, regain = _usages(name, payload)
        if pcts:
            top = max(top, *pcts)
        regain_s = max(regain_s, regain)
        if name == "x-ad-account-usage" and isinstance(payload, Mapping):
            reset_s = max(reset_s, _num(payload.get("reset_time_duration")) or 0.0)
    if regain_s > 0:
        return ThrottleDecision("pause", regain_s, top, f"estimated_time_to_regain_access {regain_s / 60:g} min",
                                blocked=True)
    if top >= PAUSE_AT_PCT:
        return ThrottleDecision("pause", reset_s or DEFAULT_PAUSE_S, top, f"usage {top:g}% >= {PAUSE_AT_PCT:g}%")
    if top >= SLOW_AT_PCT:
        # Slow down in proportion to how close we are to the pause line.
        frac = (top - SLOW_AT_PCT) / (PAUSE_AT_PCT - SLOW_AT_PCT)
        return ThrottleDecision("slow", SLOW_DELAY_S * (1 + 4 * frac), top, f"usage {top:g}% >= {SLOW_AT_PCT:g}%")
    return ThrottleDecision("go", 0.0, top, "ok")


ErrorKind = Literal["reauth", "throttle", "fatal"]


def classify_error(code: int | None, http_status: int | None = None, transient: bool = False) -> ErrorKind:
    """190 -> re-authorise (never retry); throttling codes, server errors (5xx) and
    errors Meta flags ``is_transient`` -> retry later with backoff; else fatal."""
    if code in REAUTH_CODES:
        return "reauth"
    if code in THROTTLE_CODES or transient or (http_status is not None and http_status >= 500):
        return "throttle"
    return "fatal"


def interval_factor(d: ThrottleDecision) -> float:
    """How much to stretch the account's polling interval: 1x below 85 % usage, rising
    linearly to 4x at the 95 % pause line (a pause is handled by its own delay)."""
    if d.action != "slow":
        return 1.0
    frac = min(1.0, max(0.0, (d.usage_pct - SLOW_AT_PCT) / (PAUSE_AT_PCT - SLOW_AT_PCT)))
    return 1.0 + 3.0 * frac


# The next read of today is stretched at most this much (at 100 % usage).
HOT_MAX_FACTOR = 2.0


@dataclass(frozen=True)
class Pacing:
    """How the next read of today is paced: the interval's ``factor`` and why (None: on time)."""

    factor: float
    note: str | None


def hot_pacing(d: ThrottleDecision) -> Pacing:
    """Today's read is one to a few requests and the freshest data there is, so it keeps
    its cadence below the pause line (the expensive loops slow down instead: the warm
    loop's interval stretches from 85 %, and it stops at the pause line); from 95 % it
    slows by degrees, linearly to :data:`HOT_MAX_FACTOR` at 100 %.  A block with a regain
    time never gets here (the sync ends ``throttled`` until then)."""
    if d.action != "pause" or d.blocked:
        return Pacing(1.0, None)
    frac = min(1.0, max(0.0, (d.usage_pct - PAUSE_AT_PCT) / (100.0 - PAUSE_AT_PCT)))
    return Pacing(1.0 + (HOT_MAX_FACTOR - 1.0) * frac, f"usage {d.usage_pct:g} %")
