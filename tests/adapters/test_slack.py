"""The Slack client against the local webhook fake: replies classified for the outbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.slack import SlackClient, retry_after
from tests.fakes.slack_server import FakeSlack, Reply

MSG = {"text": "hello", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}]}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack().running() as f:
        yield f


def test_ok_is_sent_and_body_arrives(fake: FakeSlack) -> None:
    url = fake.hook("a")
    r = SlackClient().post(url, MSG)
    assert r.outcome == "sent"
    assert [x.body for x in fake.requests_to(url)] == [MSG]


def test_429_carries_retry_after(fake: FakeSlack) -> None:
    url = fake.hook("a")
    fake.script(url, Reply(429, "rate_limited", retry_after=7))
    r = SlackClient().post(url, MSG)
    assert (r.outcome, r.retry_after_s, r.status) == ("retry", 7.0, 429)
    assert SlackClient().post(url, MSG).outcome == "sent"


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_gone_statuses_are_permanent_with_the_error_text(fake: FakeSlack, status: int) -> None:
    url = fake.hook("a")
    fake.gone(url, status, "channel_is_archived")
    r = SlackClient().post(url, MSG)
    assert r.outcome == "permanent" and str(status) in (r.error or "") and "channel_is_archived" in (r.error or "")
    assert url not in (r.error or "")  # the webhook URL is a secret


@pytest.mark.parametrize("reply", [Reply(500, "internal"), Reply(503, ""), Reply(200, "not ok")])
def test_server_errors_are_retried(fake: FakeSlack, reply: Reply) -> None:
    url = fake.hook("a")
    fake.script(url, reply)
    r = SlackClient().post(url, MSG)
    assert r.outcome == "retry" and r.retry_after_s is None


def test_timeout_is_retried_without_the_url(fake: FakeSlack) -> None:
    url = fake.hook("a")
    fake.script(url, Reply(delay_s=1.0))
    r = SlackClient(timeout_s=0.2).post(url, MSG)
    assert r.outcome == "retry" and "timed out" in (r.error or "") and "services" not in (r.error or "")


def test_connection_refused_is_retried() -> None:
    r = SlackClient(timeout_s=1).post("http://127.0.0.1:9/services/T/B/secret", MSG)
    assert r.outcome == "retry" and "secret" not in (r.error or "")


@pytest.mark.parametrize(("header", "secs"), [("3", 3.0), ("0", 1.0), (None, 1.0), ("soon", 1.0), ("99999", 3600.0)])
def test_retry_after_parsing(header: str | None, secs: float) -> None:
    assert retry_after(header) == secs
