"""Usage headers -> go/slow/pause; error codes -> reauth/throttle/fatal; backoff math."""

from __future__ import annotations

import itertools
import json

import pytest

from adapters.meta.throttle import classify_error, decide, hot_pacing
from ground.resilience import CircuitBreaker, backoff_delay


def test_low_usage_goes() -> None:
    d = decide({"x-ad-account-usage": json.dumps({"acc_id_util_pct": 12.5, "reset_time_duration": 0})})
    assert (d.action, d.delay_s, d.usage_pct) == ("go", 0.0, 12.5)


def test_usage_near_85_slows_down() -> None:
    d = decide({"X-FB-Ads-Insights-Throttle": json.dumps({"app_id_util_pct": 10, "acc_id_util_pct": 88})})
    assert d.action == "slow" and d.usage_pct == 88 and d.delay_s > 0


def test_usage_above_95_pauses_for_reset_time() -> None:
    d = decide({"x-ad-account-usage": json.dumps({"acc_id_util_pct": 97, "reset_time_duration": 240})})
    assert (d.action, d.delay_s) == ("pause", 240)


def test_business_use_case_regain_time_pauses_in_minutes() -> None:
    buc = {"123": [{"type": "ads_insights", "call_count": 40, "total_cputime": 20, "total_time": 30,
                    "estimated_time_to_regain_access": 7}]}
    d = decide({"x-business-use-case-usage": json.dumps(buc)})
    assert (d.action, d.delay_s) == ("pause", 420.0)


def test_worst_header_wins_and_garbage_is_ignored() -> None:
    d = decide({"x-app-usage": json.dumps({"call_count": 91}), "x-ad-account-usage": "{not json",
                "x-fb-ads-insights-throttle": json.dumps({"acc_id_util_pct": "x"})})
    assert d.action == "slow" and d.usage_pct == 91


@pytest.mark.parametrize(("code", "kind"), [(190, "reauth"), (17, "throttle"), (613, "throttle"), (4, "throttle"),
                                            (32, "throttle"), (80000, "throttle"), (80004, "throttle"),
                                            (80014, "throttle"), (80015, "fatal"), (100, "fatal"), (None, "fatal")])
def test_error_codes(code: int | None, kind: str) -> None:
    assert classify_error(code) == kind


def test_backoff_grows_is_capped_and_keeps_a_floor() -> None:
    assert backoff_delay(0, base_s=2, jitter=0.0) == 1.0
    assert backoff_delay(0, base_s=2, jitter=0.999) == pytest.approx(1.999)
    assert backoff_delay(3, base_s=2, jitter=0.0) == 8.0  # step 16: half fixed
    assert backoff_delay(30, base_s=2, cap_s=300, jitter=0.5) == 225.0
    with pytest.raises(ValueError):
        backoff_delay(-1)


def test_circuit_breaker_opens_for_retry_delay() -> None:
    cb = CircuitBreaker()
    assert cb.allows(100.0)
    cb.trip(100.0, 30.0)
    assert not cb.allows(129.9) and cb.allows(130.0) and cb.failures == 1
    cb.trip(101.0, 5.0)  # a shorter delay never shortens an open breaker
    assert not cb.allows(120.0)
    cb.reset()
    assert cb.allows(0.0)


def test_server_errors_and_transient_flags_are_retried_but_190_never() -> None:
    assert classify_error(None, 503) == "throttle"
    assert classify_error(2, 400, transient=True) == "throttle"
    assert classify_error(190, 500, transient=True) == "reauth"
    assert classify_error(100, 400) == "fatal"


def test_interval_stretches_with_usage() -> None:
    from adapters.meta.throttle import interval_factor

    go = decide({"x-app-usage": json.dumps({"call_count": 50})})
    at90 = decide({"x-app-usage": json.dumps({"call_count": 90})})
    at85 = decide({"x-app-usage": json.dumps({"call_count": 85})})
    assert interval_factor(go) == 1.0 and interval_factor(at85) == 1.0 and interval_factor(at90) == 2.5


def test_todays_reads_slow_by_degrees_only_past_the_pause_line() -> None:
    def pacing(pct: float) -> tuple[float, str | None]:
        p = hot_pacing(decide({"x-ad-account-usage": json.dumps({"acc_id_util_pct": pct, "reset_time_duration": 1800})}))
        return p.factor, p.note

    assert pacing(50) == (1.0, None) and pacing(94.9) == (1.0, None)  # the warm loop slows instead
    assert pacing(96)[0] == pytest.approx(1.2) and pacing(96)[1] == "usage 96 %"
    factors = [pacing(95 + i / 10)[0] for i in range(0, 80)]
    assert all(b >= a for a, b in itertools.pairwise(factors))  # never faster as usage grows
    assert max(b - a for a, b in itertools.pairwise(factors)) <= 0.021  # no cliff
    assert factors[-1] == 2.0 and pacing(250)[0] == 2.0  # at most twice the interval
    blocked = decide({"x-business-use-case-usage": json.dumps(
        {"1": [{"call_count": 100, "estimated_time_to_regain_access": 5}]})})
    assert blocked.blocked and hot_pacing(blocked).factor == 1.0  # a block ends the sync as throttled instead
