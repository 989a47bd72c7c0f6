"""Alert wording: the numbers that fired, names when known, recovery and dry-run wording."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from domain.alert_messages import DETAILED_ALERTS, email_message, format_metric, format_money, slack_message
from schemas.alerts import MAX_ALERTS_PER_MESSAGE
from tests.fakes.slack_server import fingerprints_in
from tests.notifier.factory import alert, payload

NAMES = {"2385000000": "Black Friday – video 3", "cmp-9": "BF Prospecting"}
URL = "https://app.metricx.test"


@pytest.mark.parametrize(("metric", "value", "currency", "text"), [
    ("spend", "80.5", "USD", "$80.50"),
    ("spend", "1234567.891", "EUR", "€1,234,567.89"),
    ("cpa", "12", "SEK", "12.00 SEK"),
    ("spend", "1500", "JPY", "¥1,500"),
    ("roas", "0.5234", "USD", "0.52x"),
    ("ctr", "0.01234", "USD", "1.23%"),
    ("impressions", 12000, "USD", "12,000"),
    ("conversions", "2.5", "USD", "2.5"),
    ("conversions", 0, "USD", "0"),
    ("cpa", None, "USD", "n/a"),
])
def test_metric_formatting(metric: str, value: object, currency: str, text: str) -> None:
    assert format_metric(metric, value, currency) == text


def test_negative_money_keeps_the_sign_before_the_symbol() -> None:
    assert format_money(Decimal("-3.2"), "USD") == "-$3.20"


def test_slack_message_has_names_numbers_rule_and_link() -> None:
    a = alert(0)
    msg = slack_message([a], NAMES, URL)
    text = json.dumps(msg, ensure_ascii=False)
    assert "Black Friday – video 3" in text and "BF Prospecting" in text
    assert "$80.50" in text and "Conversions: 0" in text and "CPA: n/a" in text
    assert "Spend without sales" in text and "spend >= 80 AND conversions = 0" in text
    assert "https://app.metricx.test/?entity=meta%3A111%3A2385000000" in text
    assert msg["text"].startswith("Alert: Ad \"Black Friday – video 3\"")  # the fallback stands alone
    assert all(b["type"] in ("section", "context", "divider", "header") for b in msg["blocks"])


def test_unknown_names_fall_back_to_ids() -> None:
    msg = slack_message([alert(0)], {}, URL)
    assert "Ad 2385000000" in msg["text"]
    assert "campaign cmp-9" in json.dumps(msg)


def test_recovered_wording_and_resume() -> None:
    p = payload(0, kind="recovered", resume=True, pause=True, dry_run=False)
    text = slack_message([p], NAMES, URL, {p["fingerprint"]: "done"})["text"]
    assert text.startswith("Recovered:") and "passes" in text and "Resumed on the platform" in text
    assert "Alert:" not in text
    assert "not resumed" in slack_message([p], NAMES, URL)["text"]  # metricx had not paused it


def test_pause_wording_dry_run_done_failed() -> None:
    dry = payload(0, pause=True, dry_run=True)
    assert "paused (dry run)" in slack_message([dry], {}, URL)["text"]
    real = payload(1, pause=True, dry_run=False)
    fp = real["fingerprint"]
    assert "Paused on the platform" in slack_message([real], {}, URL, {fp: "done"})["text"]
    assert "pause FAILED" in slack_message([real], {}, URL, {fp: "failed"})["text"]
    assert "paused" not in slack_message([payload(2)], {}, URL)["text"].lower()


def test_batch_fits_block_kit_and_carries_every_alert() -> None:
    for n in (1, DETAILED_ALERTS, DETAILED_ALERTS + 1, 37, MAX_ALERTS_PER_MESSAGE):
        alerts = [alert(i) for i in range(n)]
        msg = slack_message(alerts, {}, URL)
        assert len(msg["blocks"]) <= 50, n
        assert all(len(b.get("elements", [])) <= 10 for b in msg["blocks"])  # Block Kit: 10 per context
        if n > 1:
            assert msg["blocks"][0]["type"] == "header" and f"{n} alert(s)" in msg["blocks"][0]["text"]["text"]
        # every alert is identifiable (its link carries the fingerprint), detailed or listed
        assert sorted(fingerprints_in(msg)) == sorted(a.fingerprint for a in alerts), n
        for a in alerts[:DETAILED_ALERTS]:
            assert a.entity_id in msg["text"]
        if n > DETAILED_ALERTS:
            assert f"and {n - DETAILED_ALERTS} more" in msg["text"]
    with pytest.raises(ValueError):
        slack_message([alert(i) for i in range(MAX_ALERTS_PER_MESSAGE + 1)], {}, URL)


def test_slack_escapes_merchant_text() -> None:
    msg = slack_message([alert(0)], {"2385000000": "<!channel> & co"}, URL)
    section = msg["blocks"][0]["text"]["text"]
    assert "<!channel>" not in section and "&lt;!channel&gt; &amp; co" in section


def test_email_subject_and_body() -> None:
    p = payload(0, pause=True, dry_run=True)
    mail = email_message(p, NAMES, URL)
    assert mail.subject.startswith("[metricx] Alert: Ad \"Black Friday – video 3\"")
    assert "\n" not in mail.subject
    for needle in ("Spend: $80.50", "Rule: Spend without sales (version 3)", "Condition: spend >= 80",
                   "paused (dry run)", "Open in metricx: https://app.metricx.test/", p["fingerprint"]):
        assert needle in mail.text
    rec = email_message(payload(0, kind="recovered"), {}, URL)
    assert rec.subject.startswith("[metricx] Recovered: Ad 2385000000")


def test_model_and_dict_render_the_same() -> None:
    assert slack_message([alert(3)], NAMES, URL) == slack_message([payload(3)], NAMES, URL)
