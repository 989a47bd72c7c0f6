"""``GET /alerts``, ``GET /alerts/actions`` and the dashboard's alert feed, reading rows
written the way the pipeline (``alerts``), the notifier (``alert_deliveries``) and the
pause action (``entity_actions``) write them."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from schemas.alerts import Alert, alert_payload
from tests.serving.stoploss_fixtures import CAROL, VICTOR, Api, api, rules_topic  # noqa: F401

RULE_A = uuid.uuid4()
RULE_B = uuid.uuid4()


def alert(ws: uuid.UUID, rule: uuid.UUID, entity: str, kind: str = "fired", minute: int = 0,
          spend: str = "84.5") -> Alert:
    captured = datetime(2026, 11, 25, 12, minute, tzinfo=UTC)
    fp = f"{rule}|meta:act-1:ad:{entity}|2026-11-25|{kind}"
    return Alert(fingerprint=fp, kind=kind, workspace_id=str(ws), rule_id=str(rule), rule_version=1,
                 rule_name="Spent 80, sold nothing", conditions="spend >= 80 AND conversions = 0", window="today",
                 provider="meta", account_id="act-1", entity_level="ad", entity_id=entity, campaign_id="c1",
                 adset_id="s1", report_date=date(2026, 11, 25), timezone="UTC", currency="USD",
                 captured_at=captured,
                 observed=(("spend", Decimal(spend)), ("conversions", Decimal(0)), ("impressions", 2000),
                           ("roas", Decimal(0)), ("cpa", None)),
                 notify=(), pause=False, pause_dry_run=True, resume=False)


def insert(conn: psycopg.Connection[Any], a: Alert, created_at: datetime) -> None:
    conn.execute(
        "INSERT INTO alerts (fingerprint, workspace_id, rule_id, kind, provider, account_id, entity_level, entity_id, "
        "campaign_id, report_date, currency, captured_at, payload, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (a.fingerprint, a.workspace_id, a.rule_id, a.kind, a.provider, a.account_id, a.entity_level, a.entity_id,
         a.campaign_id, a.report_date, a.currency, a.captured_at, Jsonb(alert_payload(a)), created_at))


def seed(a: Api) -> tuple[list[Alert], datetime]:
    t0 = datetime.now(UTC) - timedelta(hours=1)
    ws_a, ws_b = a.tenants.ws_a, a.tenants.ws_b
    alerts = [alert(ws_a, RULE_A, f"ad-{i}", minute=i) for i in range(12)]
    alerts.append(alert(ws_a, RULE_A, "ad-0", kind="recovered", minute=30, spend="90"))
    alerts.append(alert(ws_a, RULE_B, "ad-x", minute=31))
    with psycopg.connect(a.database, autocommit=True) as conn:
        for i, x in enumerate(alerts):
            insert(conn, x, t0 + timedelta(minutes=i))
        insert(conn, alert(ws_b, RULE_A, "ad-b"), t0 + timedelta(minutes=59))  # B's, newest of all
        conn.execute("INSERT INTO connections (workspace_id, provider, account_id, token_key_id, token_ciphertext) "
                     "VALUES (%s, 'meta', 'act-1', 'k', '\\x00')", (ws_a,))
        conn.execute("INSERT INTO entities (workspace_id, provider, account_id, entity_id, entity_level, name) "
                     "VALUES (%s, 'meta', 'act-1', 'ad-x', 'ad', 'Carousel <b>bold</b>')", (ws_a,))
    return alerts, t0


def test_alerts_newest_first_with_filters_and_isolation(api: Api) -> None:  # noqa: F811
    alerts, t0 = seed(api)
    r = api.alice("GET", "/alerts")
    assert r.status_code == 200, r.text
    got = r.json()["alerts"]
    assert [g["fingerprint"] for g in got] == [x.fingerprint for x in reversed(alerts)]
    newest = got[0]
    assert (newest["rule_id"], newest["entity_id"], newest["entity_name"]) == (str(RULE_B), "ad-x",
                                                                             "Carousel <b>bold</b>")
    assert newest["observed"] == {"spend": "84.5", "conversions": "0", "impressions": 2000, "roas": "0",
                                  "cpa": None}
    assert (newest["rule_name"], newest["conditions"], newest["window"], newest["currency"]) == \
        ("Spent 80, sold nothing", "spend >= 80 AND conversions = 0", "today", "USD")
    assert got[1]["kind"] == "recovered"
    assert [g["entity_id"] for g in api.alice("GET", "/alerts", rule_id=str(RULE_B)).json()["alerts"]] == ["ad-x"]
    assert [g["kind"] for g in api.alice("GET", "/alerts", kind="recovered").json()["alerts"]] == ["recovered"]
    since = (t0 + timedelta(minutes=12)).isoformat()
    assert len(api.alice("GET", "/alerts", since=since).json()["alerts"]) == 2
    assert len(api.alice("GET", "/alerts", limit=3).json()["alerts"]) == 3
    assert api.alice("GET", "/alerts", limit=0).status_code == 422
    assert api.alice("GET", "/alerts", kind="exploded").status_code == 422
    # B sees only its own; a viewer of A sees A's.
    assert [g["entity_id"] for g in api.as_(CAROL, api.tenants.ws_b)("GET", "/alerts").json()["alerts"]] == ["ad-b"]
    assert len(api.as_(VICTOR, api.tenants.ws_a)("GET", "/alerts").json()["alerts"]) == len(alerts)
    assert api.as_(CAROL, api.tenants.ws_a)("GET", "/alerts").status_code == 403


def test_delivery_status_per_channel(api: Api) -> None:  # noqa: F811
    alerts, _ = seed(api)
    slack = api.alice("POST", "/channels", {"kind": "slack", "name": "#loss",
                                            "webhook_url": "https://hooks.slack.com/services/T/B/x"}).json()["id"]
    mail = api.alice("POST", "/channels", {"kind": "email", "name": "buyers",
                                           "recipients": ["a@shop.example"]}).json()["id"]
    fp = alerts[-1].fingerprint
    with psycopg.connect(api.database, autocommit=True) as conn:
        conn.execute("INSERT INTO alert_deliveries (fingerprint, channel_id, workspace_id, status, attempts, sent_at) "
                     "VALUES (%s, %s, %s, 'sent', 1, now())", (fp, slack, api.tenants.ws_a))
        conn.execute("INSERT INTO alert_deliveries (fingerprint, channel_id, workspace_id, status, attempts, "
                     "last_error) VALUES (%s, %s, %s, 'failed', 2, '451 try later')", (fp, mail, api.tenants.ws_a))
    [a] = api.alice("GET", "/alerts", limit=1).json()["alerts"]
    d = {x["channel_name"]: x for x in a["deliveries"]}
    assert (d["#loss"]["status"], d["#loss"]["attempts"], d["#loss"]["sent_at"] is not None) == ("sent", 1, True)
    assert (d["buyers"]["status"], d["buyers"]["attempts"], d["buyers"]["last_error"]) == ("failed", 2, "451 try later")
    assert all(x["deliveries"] == [] for x in api.alice("GET", "/alerts").json()["alerts"][1:])


def test_entity_actions_audit(api: Api) -> None:  # noqa: F811
    alerts, _ = seed(api)
    with psycopg.connect(api.database, autocommit=True) as conn:
        for i, (action, dry, outcome, err) in enumerate([("pause", True, "would", None),
                                                         ("pause", False, "failed", "token expired"),
                                                         ("resume", False, "done", None)]):
            conn.execute("INSERT INTO entity_actions (fingerprint, workspace_id, provider, account_id, entity_level, "
                         "entity_id, action, dry_run, outcome, error, created_at) "
                         "VALUES (%s, %s, 'meta', 'act-1', 'ad', %s, %s, %s, %s, %s, now() + %s * interval '1 s')",
                         (alerts[i].fingerprint, api.tenants.ws_a, alerts[i].entity_id, action, dry, outcome, err, i))
    r = api.alice("GET", "/alerts/actions")
    assert r.status_code == 200, r.text
    got = [(x["action"], x["dry_run"], x["outcome"], x["error"], x["entity_id"]) for x in r.json()["actions"]]
    assert got == [("resume", False, "done", None, "ad-2"), ("pause", False, "failed", "token expired", "ad-1"),
                   ("pause", True, "would", None, "ad-0")]
    assert api.as_(CAROL, api.tenants.ws_b)("GET", "/alerts/actions").json() == {"actions": []}


def test_dashboard_carries_the_latest_ten(api: Api) -> None:  # noqa: F811
    alerts, _ = seed(api)
    r = api.alice("GET", "/dashboard")
    assert r.status_code == 200, r.text
    feed = r.json()["alerts"]
    assert [a["fingerprint"] for a in feed] == [x.fingerprint for x in reversed(alerts)][:10]
    assert api.as_(CAROL, api.tenants.ws_b)("GET", "/dashboard").json()["alerts"][0]["entity_id"] == "ad-b"
