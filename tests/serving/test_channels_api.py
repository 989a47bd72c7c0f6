"""The channels API against the real PostgreSQL: secrets are stored encrypted and never
returned, Slack webhooks are restricted to Slack's host (plus configured test hosts),
email recipients are validated, a channel disabled by the notifier shows why and can be
re-enabled, roles and workspace isolation hold."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.rows import dict_row
from pydantic import SecretStr

from adapters import channels_store as store
from adapters.crypto import Keyring
from ground.settings import TokenKeySettings
from serving.container import services_of
from tests.serving.stoploss_fixtures import CAROL, KEY, VICTOR, Api, api, rules_topic  # noqa: F401
from tests.serving.test_rules_api import RULE

HOOK = "https://hooks.slack.com/services/T000/B000/sekrit-token-123"


def test_slack_channel_round_trip_never_shows_the_secret(api: Api) -> None:  # noqa: F811
    r = api.alice("POST", "/channels", {"kind": "slack", "name": "#stop-loss", "webhook_url": HOOK})
    assert r.status_code == 201, r.text
    ch = r.json()
    assert (ch["kind"], ch["name"], ch["status"], ch["last_error"]) == ("slack", "#stop-loss", "enabled", None)
    assert "sekrit" not in r.text
    listed = api.alice("GET", "/channels")
    assert listed.json()["channels"] == [ch] and "sekrit" not in listed.text
    with psycopg.connect(api.database) as conn:
        raw = conn.execute("SELECT secret_ciphertext FROM channels").fetchone()
        assert raw is not None and b"sekrit" not in bytes(raw[0])  # encrypted at rest
        assert store.secret(conn, Keyring.parse(f"k1:{KEY}", None), api.tenants.ws_a, uuid.UUID(ch["id"])) == HOOK


@pytest.mark.parametrize(("url", "ok"), [
    (HOOK, True),
    ("http://hooks.slack.com/services/T/B/x", False),  # not https
    ("https://hooks.slack.com.evil.test/services/T/B/x", False),
    ("https://evil.test/services/T/B/x", False),
    ("https://user:pw@hooks.slack.com/services/T/B/x", False),
    ("https://hooks.slack.com:8443/services/T/B/x", False),
    ("https://hooks.slack.com/other/T/B/x", False),
    # Malformed URLs are refused, not a server error (urlsplit / .port raise on them).
    ("https://hooks.slack.com:99999/services/T/B/x", False),  # port out of range
    ("https://hooks.slack.com:https/services/T/B/x", False),  # non-numeric port
    ("https://[hooks.slack.com/services/T/B/x", False),  # unbalanced bracket
    ("https://hooks.slack.com]/services/T/B/x", False),
    # Dot segments would leave /services/ once the client normalises the path.
    ("https://hooks.slack.com/services/../api/chat.postMessage", False),
    ("https://hooks.slack.com/services/T/../../api/x", False),
    ("https://hooks.slack.com/services/%2e%2e/api/x", False),
    ("https://hooks.slack.com/services/./T/B/x", False),
    ("https://hooks.slack.com/services//T/B/x", False),
    ("http://127.0.0.1:9/slack", True),  # METRICX_SLACK_WEBHOOK_HOSTS in the fixture
    ("http://localhost:9/slack", True),
    ("http://10.0.0.1/slack", False),
])
def test_webhook_hosts(api: Api, url: str, ok: bool) -> None:  # noqa: F811
    r = api.alice("POST", "/channels", {"kind": "slack", "name": "x", "webhook_url": url})
    assert r.status_code == (201 if ok else 422), r.text
    if not ok:
        assert r.json()["detail"][0]["loc"] == ["body", "webhook_url"]
        assert "hooks.slack.com/services" in r.json()["detail"][0]["msg"] or "user:password" in r.text


def test_email_channel_validates_addresses(api: Api) -> None:  # noqa: F811
    r = api.alice("POST", "/channels", {"kind": "email", "name": "buyers",
                                        "recipients": ["ana@shop.example", "Ana@shop.example", "bo@shop.example"]})
    assert r.status_code == 201, r.text
    with psycopg.connect(api.database) as conn:
        secret = store.secret(conn, Keyring.parse(f"k1:{KEY}", None), api.tenants.ws_a, uuid.UUID(r.json()["id"]))
    assert secret == "ana@shop.example,bo@shop.example"  # deduplicated, comma-separated
    for bad in (["not-an-address"], ["a@b"], ["a b@c.example"], ["x@y.example, z@w.example"], []):
        r = api.alice("POST", "/channels", {"kind": "email", "name": "buyers", "recipients": bad})
        assert r.status_code == 422, (bad, r.text)
    r = api.alice("POST", "/channels", {"kind": "pager", "name": "x"})
    assert r.status_code == 422


def test_disabled_channel_shows_its_error_and_can_be_enabled(api: Api) -> None:  # noqa: F811
    cid = api.alice("POST", "/channels", {"kind": "slack", "name": "s", "webhook_url": HOOK}).json()["id"]
    with psycopg.connect(api.database, autocommit=True, row_factory=dict_row) as conn:
        store.disable(conn, api.tenants.ws_a, uuid.UUID(cid), "slack answered 410 channel_is_archived")
    [ch] = api.alice("GET", "/channels").json()["channels"]
    assert (ch["status"], ch["last_error"]) == ("disabled", "slack answered 410 channel_is_archived")
    assert ch["disabled_at"] is not None
    r = api.alice("POST", f"/channels/{cid}/enable")
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["last_error"], r.json()["disabled_at"]) == ("enabled", None, None)


def test_delete_refused_while_a_rule_uses_it(api: Api) -> None:  # noqa: F811
    cid = api.alice("POST", "/channels", {"kind": "slack", "name": "s", "webhook_url": HOOK}).json()["id"]
    rid = api.alice("POST", "/rules", {**RULE, "actions": {"notify": [cid]}}).json()["id"]
    r = api.alice("DELETE", f"/channels/{cid}")
    assert (r.status_code, r.json()) == (409, {"detail": f"channel is used by rules: {RULE['name']!r}"})
    assert api.alice("DELETE", f"/rules/{rid}").status_code == 204
    assert api.alice("DELETE", f"/channels/{cid}").status_code == 204
    assert api.alice("DELETE", f"/channels/{cid}").status_code == 404
    assert api.alice("GET", "/channels").json() == {"channels": []}


def test_roles_and_isolation(api: Api) -> None:  # noqa: F811
    cid = api.alice("POST", "/channels", {"kind": "slack", "name": "s", "webhook_url": HOOK}).json()["id"]
    viewer = api.as_(VICTOR, api.tenants.ws_a)
    assert [c["id"] for c in viewer("GET", "/channels").json()["channels"]] == [cid]
    for method, path, body in [("POST", "/channels", {"kind": "slack", "name": "s", "webhook_url": HOOK}),
                               ("DELETE", f"/channels/{cid}", None), ("POST", f"/channels/{cid}/enable", None)]:
        assert viewer(method, path, body).status_code == 403
    carol_b = api.as_(CAROL, api.tenants.ws_b)
    assert carol_b("GET", "/channels").json() == {"channels": []}
    assert carol_b("DELETE", f"/channels/{cid}").status_code == 404
    assert carol_b("POST", f"/channels/{cid}/enable").status_code == 404
    assert api.as_(CAROL, api.tenants.ws_a)("GET", "/channels").status_code == 403
    assert len(api.alice("GET", "/channels").json()["channels"]) == 1


def test_missing_keys_is_a_clear_503(api: Api) -> None:  # noqa: F811
    services = services_of(api.client.app)  # a server configured without token keys
    services.settings = services.settings.model_copy(update={"tokens": TokenKeySettings(keys=SecretStr(""))})
    r = api.alice("POST", "/channels", {"kind": "slack", "name": "s", "webhook_url": HOOK})
    assert (r.status_code, r.json()) == (503, {"detail": "channels need METRICX_TOKEN_KEYS configured on the server"})
