"""The SMTP client against a real local SMTP server (aiosmtpd): 4xx retried, 5xx final."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.email import EmailSender, message_id, parse_recipients
from ground.settings import NotifierSettings
from schemas.alerts import EmailContent
from tests.fakes.smtp_server import FakeSmtp, self_signed

FP = "rule|meta:111:ad:2385|2026-11-25|fired"
CONTENT = EmailContent("[metricx] Alert: Ad 2385 — “Spend without sales”", "Spend: $80.50\n")
TO = ["buyer@shop.test", "boss@shop.test"]


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with FakeSmtp().running() as f:
        yield f


def sender(fake: FakeSmtp, **kw: object) -> EmailSender:
    return EmailSender(NotifierSettings(smtp_host="127.0.0.1", smtp_port=fake.port, smtp_from="metricx <alerts@metricx.test>",
                                        **kw))  # type: ignore[arg-type]


def test_mail_arrives_with_message_id_from_the_fingerprint(smtp: FakeSmtp) -> None:
    s = sender(smtp)
    assert s.send(TO, FP, CONTENT).outcome == "sent"
    s.close()
    [mail] = smtp.mails
    assert sorted(mail.rcpt_tos) == sorted(TO) and mail.mail_from == "alerts@metricx.test"
    assert mail.message["Subject"] == CONTENT.subject
    assert mail.message["Message-ID"] == message_id(FP, "alerts@metricx.test")
    body = mail.message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert mail.fingerprint == FP and "Spend: $80.50" in body.decode()
    assert message_id(FP, "x@metricx.test") == message_id(FP, "x@metricx.test") != message_id(FP + "x", "x@metricx.test")


def test_4xx_is_retried_then_accepted(smtp: FakeSmtp) -> None:
    smtp.script_data("451 4.3.0 Temporary failure, try again later")
    s = sender(smtp)
    r = s.send(TO, FP, CONTENT)
    assert r.outcome == "retry" and "451" in (r.error or "")
    assert smtp.mails == []
    assert s.send(TO, FP, CONTENT).outcome == "sent"
    assert len(smtp.mails) == 1


def test_5xx_is_dead_with_the_reply_kept(smtp: FakeSmtp) -> None:
    smtp.script_data("554 5.7.1 Message rejected as spam")
    r = sender(smtp).send(TO, FP, CONTENT)
    assert r.outcome == "dead" and "554 5.7.1 Message rejected as spam" in (r.error or "")
    assert smtp.mails == []


def test_every_recipient_refused_disables(smtp: FakeSmtp) -> None:
    for a in TO:
        smtp.reject_rcpt(a, "550 5.1.1 No such user")
    r = sender(smtp).send(TO, FP, CONTENT)
    assert r.outcome == "disable" and "550 5.1.1 No such user" in (r.error or "")


def test_one_recipient_refused_still_delivers_to_the_others(smtp: FakeSmtp) -> None:
    smtp.reject_rcpt("boss@shop.test", "550 5.1.1 No such user")
    assert sender(smtp).send(TO, FP, CONTENT).outcome == "sent"
    assert smtp.mails[0].rcpt_tos == ["buyer@shop.test"]


def test_temporary_recipient_refusal_is_retried(smtp: FakeSmtp) -> None:
    for a in TO:
        smtp.reject_rcpt(a, "450 4.2.1 Mailbox busy")
    assert sender(smtp).send(TO, FP, CONTENT).outcome == "retry"


def test_no_server_is_a_retry() -> None:
    s = EmailSender(NotifierSettings(smtp_host="127.0.0.1", smtp_port=9, smtp_timeout_s=2))
    r = s.send(TO, FP, CONTENT)
    assert r.outcome == "retry" and "transport" in (r.error or "")


def test_starttls_and_auth(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with FakeSmtp(tls=(cert, key), users={"metricx": "s3cret"}).running() as fake:
        ok = sender(fake, smtp_starttls=True, smtp_ca_file=cert, smtp_username="metricx", smtp_password="s3cret")
        assert ok.send(TO, FP, CONTENT).outcome == "sent"
        assert fake.mails[0].tls and fake.mails[0].user == "metricx"
        bad = sender(fake, smtp_starttls=True, smtp_ca_file=cert, smtp_username="metricx", smtp_password="nope")
        r = bad.send(TO, FP, CONTENT)
        assert r.outcome == "retry" and "authentication" in (r.error or "")
        untrusted = sender(fake, smtp_starttls=True)  # system CAs do not know the test cert
        assert untrusted.send(TO, FP, CONTENT).outcome == "retry"
        assert len(fake.mails) == 1


def test_recipients_parsing() -> None:
    assert parse_recipients("a@x.test, Bob <b@x.test>\nnot-an-address,") == ["a@x.test", "b@x.test"]
