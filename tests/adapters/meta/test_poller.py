"""The real facebook-business SDK against the local fake Graph API (tests/fakes/graph_api.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.meta.poller import MetaAccount, MetaPoller
from adapters.platform import NeedsReauth, SyncFailure, Throttled
from tests.fakes.graph_api import AdDay, FakeAccount, FakeGraphApi, ScriptedError

WS = "7b0c5a0e-8a51-4d43-9a52-3c5f2f0e7a10"
NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)  # 13:00 in New York
TODAY = date(2026, 11, 25)


@pytest.fixture
def fake() -> Iterator[FakeGraphApi]:
    with FakeGraphApi(page_size=7).running() as f:
        yield f


def populate(fake: FakeGraphApi, account_id: str = "111", token: str = "EAAtok111", ads: int = 20) -> FakeAccount:
    acct = fake.add_account(FakeAccount(account_id, token, "America/New_York", "EUR"))
    for i in range(ads):
        for d in (TODAY - timedelta(days=1), TODAY):
            acct.put(AdDay(f"c{i % 3}", f"s{i % 5}", f"{account_id}{i:04d}", d,
                           spend=Decimal(f"{i}.{i:02d}"), impressions=1000 + i, clicks=10 + i,
                           purchases=Decimal(i % 4), revenue=Decimal(f"{i * 10}.5")))
    return acct


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, s: float) -> None:
        self.calls.append(s)


def poller(fake: FakeGraphApi, sleeps: Sleeps | None = None, account_id: str = "111", token: str = "EAAtok111") -> MetaPoller:
    return MetaPoller(MetaAccount(WS, account_id, token), graph_url=fake.url, sleep=sleeps or Sleeps(), clock=lambda: NOW)


def test_all_pages_mapped_with_truth_from_the_fake(fake: FakeGraphApi) -> None:
    acct = populate(fake)
    result = poller(fake).poll(TODAY - timedelta(days=1), TODAY)
    assert not result.rejected
    got = {(s.entity_id, s.report_date): s for s in result.snapshots}
    assert set(got) == set(acct.days)  # 40 rows over 6 pages of 7: every cursor followed
    for key, truth in acct.days.items():
        s = got[key]
        assert (s.metrics.spend, s.metrics.impressions, s.metrics.clicks) == (truth.spend, truth.impressions, truth.clicks)
        assert s.metrics.conversions == truth.purchases  # four overlapping views, counted once
        assert s.metrics.revenue == (truth.revenue if truth.purchases else 0)
        assert (s.timezone, s.currency, s.campaign_id, s.adset_id) == ("America/New_York", "EUR", truth.campaign_id, truth.adset_id)
    insight_calls = [r for r in fake.requests if r.path.endswith("/insights")]
    assert len(insight_calls) == 6
    assert [r.params.get("after") is None for r in insight_calls] == [True] + [False] * 5
    assert json.loads(insight_calls[0].params["time_range"]) == {"since": "2026-11-24", "until": "2026-11-25"}
    assert result.api_calls == 7  # account info + 6 pages


def test_each_connection_uses_its_own_token(fake: FakeGraphApi) -> None:
    populate(fake, "111", "EAAtok111", ads=2)
    populate(fake, "222", "EAAtok222", ads=3)
    a, b = poller(fake, account_id="111", token="EAAtok111"), poller(fake, account_id="222", token="EAAtok222")
    assert len(b.poll(TODAY, TODAY).snapshots) == 3
    assert len(a.poll(TODAY, TODAY).snapshots) == 2
    tokens = {(r.path.split("/")[2], r.params["access_token"]) for r in fake.requests}
    assert tokens == {("act_111", "EAAtok111"), ("act_222", "EAAtok222")}


@pytest.mark.parametrize("code", [17, 613, 80004])
def test_throttle_codes_are_retried_with_backoff(fake: FakeGraphApi, code: int) -> None:
    populate(fake, ads=3)
    sleeps = Sleeps()
    fake.fail_next(ScriptedError(code), ScriptedError(code))
    result = poller(fake, sleeps).poll(TODAY, TODAY)
    assert len(result.snapshots) == 3
    assert len(sleeps.calls) == 2 and sleeps.calls[1] > sleeps.calls[0] * 0.99 and all(s > 0 for s in sleeps.calls)


def test_throttle_error_headers_lengthen_the_wait(fake: FakeGraphApi) -> None:
    populate(fake, ads=1)
    sleeps = Sleeps()
    usage = json.dumps({"9": [{"type": "ads_insights", "call_count": 100, "estimated_time_to_regain_access": 3}]})
    fake.fail_next(ScriptedError(80004, headers={"x-business-use-case-usage": usage}))
    poller(fake, sleeps).poll(TODAY, TODAY)
    assert sleeps.calls == [180.0]


def test_persistent_throttling_ends_as_throttled(fake: FakeGraphApi) -> None:
    populate(fake, ads=1)
    fake.fail_next(*[ScriptedError(17)] * 10)
    with pytest.raises(Throttled) as exc:
        poller(fake).poll(TODAY, TODAY)
    assert exc.value.status == "throttled" and exc.value.retry_after_s and "17" in exc.value.message


def test_expired_token_needs_reauth_and_is_not_retried(fake: FakeGraphApi) -> None:
    populate(fake, ads=1)
    sleeps = Sleeps()
    with pytest.raises(NeedsReauth) as exc:
        poller(fake, sleeps, token="EAAexpiredSECRET").poll(TODAY, TODAY)
    assert exc.value.status == "needs_reauth" and "190" in exc.value.message
    assert "EAAexpiredSECRET" not in str(exc.value)
    assert sleeps.calls == [] and len(fake.requests) == 1


def test_other_errors_fail_the_sync(fake: FakeGraphApi) -> None:
    populate(fake, ads=1)
    fake.fail_next(ScriptedError(100, status=400))
    with pytest.raises(SyncFailure) as exc:
        poller(fake).poll(TODAY, TODAY)
    assert type(exc.value) is SyncFailure and "100" in exc.value.message


def test_high_usage_headers_pause_or_stop(fake: FakeGraphApi) -> None:
    populate(fake, ads=1)
    sleeps = Sleeps()
    fake.usage_headers = {"x-ad-account-usage": json.dumps({"acc_id_util_pct": 96, "reset_time_duration": 30})}
    p = poller(fake, sleeps)
    assert len(p.poll(TODAY, TODAY).snapshots) == 1
    assert 30 in sleeps.calls and p.last_decision.action == "pause"
    fake.usage_headers = {"x-ad-account-usage": json.dumps({"acc_id_util_pct": 99, "reset_time_duration": 900})}
    with pytest.raises(Throttled) as exc:
        poller(fake, Sleeps()).poll(TODAY, TODAY)
    assert exc.value.retry_after_s == 900


def test_malformed_rows_are_rejected_not_dropped(fake: FakeGraphApi) -> None:
    populate(fake, ads=2)
    fake.raw_rows["111"] = [{"ad_id": "x1", "campaign_id": "c", "adset_id": "s", "date_start": "2026-11-25",
                             "date_stop": "2026-11-25", "spend": "1.2.3", "impressions": "5", "clicks": "1"}]
    result = poller(fake).poll(TODAY, TODAY)
    assert len(result.snapshots) == 2
    assert len(result.rejected) == 1 and "spend" in result.rejected[0].reason
    assert result.rejected[0].raw["ad_id"] == "x1"


def test_async_report_runs_polled_and_paged(fake: FakeGraphApi) -> None:
    acct = populate(fake, ads=12)
    sleeps = Sleeps()
    fake.running_polls = 2
    p = poller(fake, sleeps)
    p.report_poll_s = 3.0
    result = p.poll(TODAY - timedelta(days=1), TODAY, use_async=True)
    assert {(s.entity_id, s.report_date) for s in result.snapshots} == set(acct.days)
    assert sleeps.calls == [3.0, 3.0]  # two "Job Running" answers, then completed
    posts = [r for r in fake.requests if r.method == "POST"]
    assert len(posts) == 1 and json.loads(posts[0].params["fields"])[0] == "account_id"
    run_pages = [r for r in fake.requests if r.path.startswith("/v24.0/6000000/insights")]
    assert len(run_pages) == 4  # 24 rows in pages of 7


def test_failed_report_runs_are_split_down_to_days(fake: FakeGraphApi) -> None:
    acct = populate(fake, ads=3)
    for d in range(2, 8):
        acct.put(AdDay("c0", "s0", "111x", TODAY - timedelta(days=d), Decimal("1.5"), 10, 1))
    fake.running_polls = 0
    fake.fail_runs_longer_than = 2
    result = poller(fake).poll(TODAY - timedelta(days=7), TODAY, use_async=True)
    assert {(s.entity_id, s.report_date) for s in result.snapshots} == set(acct.days)
    spans = sorted(json.loads(r.params["time_range"])["since"] for r in fake.requests if r.method == "POST")
    assert len(spans) == 7  # 8 days: failed 8 -> 4+4 failed -> 2+2+2+2 succeed = 1 + 2 + 4 runs
    fake.fail_runs_longer_than = 0  # even one day fails: the sync fails, nothing silently missing
    with pytest.raises(SyncFailure, match="failed"):
        poller(fake).poll(TODAY, TODAY, use_async=True)


def test_entity_sync_reads_hierarchy_with_names_across_pages(fake: FakeGraphApi) -> None:
    acct = populate(fake, ads=0)
    acct.objects = {
        "campaigns": [{"id": f"c{i}", "name": f"Campaign {i}", "effective_status": "ACTIVE"} for i in range(3)],
        "adsets": [{"id": f"s{i}", "name": f"Set {i}", "effective_status": "PAUSED", "campaign_id": f"c{i % 3}"}
                   for i in range(9)],
        "ads": [{"id": f"a{i}", "name": f"Ad {i}", "effective_status": "ACTIVE", "campaign_id": f"c{i % 3}",
                 "adset_id": f"s{i % 9}"} for i in range(20)]
               + [{"id": "bad:id", "name": "x", "campaign_id": "c0"}, {"id": "orphan", "name": "no campaign"}],
    }
    ents, rejected = poller(fake).entities()
    by_id = {e.entity_id: e for e in ents}
    assert len(ents) == 3 + 9 + 20
    assert (by_id["a13"].name, by_id["a13"].entity_level, by_id["a13"].campaign_id, by_id["a13"].adset_id) == (
        "Ad 13", "ad", "c1", "s4")
    assert (by_id["s4"].status, by_id["s4"].campaign_id, by_id["s4"].adset_id) == ("PAUSED", "c1", "s4")
    assert (by_id["c2"].name, by_id["c2"].campaign_id) == ("Campaign 2", "c2")
    assert sorted(r.raw["id"] for r in rejected) == ["bad:id", "orphan"]
    assert len([r for r in fake.requests if r.path.endswith("/ads")]) == 4  # 22 ads in pages of 7
