"""The rules API against the real PostgreSQL and Kafka: every write lands in the table
and, acknowledged, on the (per-test) compacted rules topic as the full ``RuleV1`` or a
tombstone; validation, roles and workspace isolation; a failed publish is a 503 that a
repeated request repairs; ``metricx rules sync`` republishes and prunes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from adapters.kafka import delete_topics, ensure_topics
from adapters.rules_topic import disable_rules, publish_ids
from schemas.rules import RuleBody, RuleIn, RuleV1, definition, parse_rule_message, rule_message
from schemas.topics import TopicSpec
from serving.container import services_of
from serving.rules_store import RulePublisher
from tests.serving.conftest import snapshot, write
from tests.serving.stoploss_fixtures import CAROL, VICTOR, Api, api, read_topic, rules_topic  # noqa: F401

RULE: dict[str, Any] = {
    "name": "Spent 80, sold nothing",
    "scope": {"level": "ad", "providers": ["meta"]},
    "conditions": {"op": "and", "conditions": [
        {"metric": "spend", "operator": ">=", "value": "80"},
        {"metric": "conversions", "operator": "=", "value": "0"},
    ]},
    "window": {"kind": "today"},
    "guards": {"min_spend": "50", "min_impressions": 1000},
    "trigger": {"mode": "once_per_day"},
}


def published(a: Api, at_least: int) -> list[tuple[str, bytes | None]]:
    return read_topic(a.settings.kafka.bootstrap, a.settings.kafka.rules_topic, at_least)


def as_v1(body: dict[str, Any]) -> RuleV1:
    """What the topic must carry for a rule the API answered with."""
    return RuleV1.model_validate({k: v for k, v in body.items() if k not in ("last_error", "created_by", "created_at")})


def slack_channel(a: Api, as_: Any = None) -> str:
    r = (as_ or a.alice)("POST", "/channels", {"kind": "slack", "name": "alerts",
                                               "webhook_url": "https://hooks.slack.com/services/T0/B0/xyz"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_crud_round_trip_publishes_every_change(api: Api) -> None:  # noqa: F811
    ch = slack_channel(api)
    r = api.alice("POST", "/rules", {**RULE, "actions": {"notify": [ch]}})
    assert r.status_code == 201, r.text
    created = r.json()
    rid = created["id"]
    assert created["version"] == 1 and created["status"] == "active" and created["schema"] == "metricx.rule.v1"
    assert created["workspace_id"] == str(api.tenants.ws_a) and created["created_by"] == api.tenants.alice
    assert created["actions"]["notify"] == [ch] and created["guards"]["min_spend"] == "50"
    [(key, value)] = published(api, 1)
    assert key == rid and value is not None
    assert parse_rule_message(value) == as_v1(created)
    # Stored definition = the RuleIn fields, exactly (the contract's own helper).
    with psycopg.connect(api.database) as conn:
        row = conn.execute("SELECT definition, created_by FROM rules WHERE id = %s", (rid,)).fetchone()
    assert row is not None and row[0] == definition(RuleIn.model_validate({**RULE, "actions": {"notify": [ch]}}))

    assert api.alice("GET", f"/rules/{rid}").json() == created
    assert [x["id"] for x in api.alice("GET", "/rules").json()["rules"]] == [rid]

    changed = {**RULE, "name": "Spent 100, sold nothing",
               "conditions": {"conditions": [{"metric": "spend", "operator": ">=", "value": "100"}]}}
    r = api.alice("PUT", f"/rules/{rid}", changed)
    assert r.status_code == 200, r.text
    v2 = r.json()
    assert v2["version"] == 2 and v2["name"] == "Spent 100, sold nothing" and v2["actions"]["notify"] == []
    # An identical PUT keeps the version and publishes again (the retry path).
    r = api.alice("PUT", f"/rules/{rid}", changed)
    assert r.status_code == 200 and r.json() == v2
    paused = api.alice("POST", f"/rules/{rid}/pause").json()
    assert (paused["status"], paused["version"]) == ("paused", 3)
    assert api.alice("POST", f"/rules/{rid}/pause").json()["version"] == 3  # no-op, republished
    resumed = api.alice("POST", f"/rules/{rid}/resume").json()
    assert (resumed["status"], resumed["version"]) == ("active", 4)

    r = api.alice("DELETE", f"/rules/{rid}")
    assert r.status_code == 204
    assert api.alice("GET", f"/rules/{rid}").status_code == 404
    msgs = published(api, 7)
    assert [k for k, _ in msgs] == [rid] * 7
    values = [parse_rule_message(v) if v is not None else None for _, v in msgs]
    assert values[1] == values[2] == as_v1(v2)
    assert values[3] == values[4] == as_v1(paused)
    assert values[5] == as_v1(resumed)
    assert values[6] is None  # the tombstone
    # Deleting again: 404, and the tombstone is sent again (a retry after a 503 is safe).
    assert api.alice("DELETE", f"/rules/{rid}").status_code == 404
    assert published(api, 8)[7] == (rid, None)


def _error_text(r: Any) -> str:
    return str(r.json()["detail"])


def test_validation_errors_are_clear_422s(api: Api) -> None:  # noqa: F811
    def bad(mutate: dict[str, Any]) -> Any:
        r = api.alice("POST", "/rules", {**RULE, **mutate})
        assert r.status_code == 422, r.text
        return r

    r = bad({"conditions": {"conditions": [{"metric": "profit", "operator": ">", "value": "1"}]}})
    assert "metric" in _error_text(r) and "spend" in _error_text(r)
    assert "window 'hours' needs 1 <= n <= 48" in _error_text(bad({"window": {"kind": "hours", "n": 0}}))
    assert "'minutes' is required for mode 'cooldown'" in _error_text(bad({"trigger": {"mode": "cooldown"}}))
    bad({"name": ""})
    bad({"surprise": 1})
    bad({"conditions": {"conditions": [{"metric": "spend", "operator": ">", "value": "-1"}]}})
    # A channel of another workspace (B's) is not a channel of A.
    foreign = slack_channel(api, api.as_(CAROL, api.tenants.ws_b))
    r = bad({"actions": {"notify": [foreign]}})
    assert r.json()["detail"][0]["msg"] == f"not a channel of this workspace: {foreign}"
    assert r.json()["detail"][0]["loc"] == ["body", "actions", "notify"]
    r = api.alice("PUT", f"/rules/{uuid.uuid4()}", {**RULE, "actions": {"notify": [foreign]}})
    assert r.status_code == 422
    with psycopg.connect(api.database) as conn:
        row = conn.execute("SELECT count(*) FROM rules").fetchone()
    assert row is not None and row[0] == 0


def test_viewers_read_but_cannot_write(api: Api) -> None:  # noqa: F811
    rid = api.alice("POST", "/rules", RULE).json()["id"]
    viewer = api.as_(VICTOR, api.tenants.ws_a)
    assert viewer("GET", "/rules").status_code == 200
    assert viewer("GET", f"/rules/{rid}").status_code == 200
    assert viewer("POST", "/rules/dry-run", RULE).status_code == 200
    assert viewer("POST", f"/rules/{rid}/dry-run").status_code == 200
    for method, path, body in [("POST", "/rules", RULE), ("PUT", f"/rules/{rid}", RULE),
                               ("POST", f"/rules/{rid}/pause", None), ("POST", f"/rules/{rid}/resume", None),
                               ("DELETE", f"/rules/{rid}", None)]:
        r = viewer(method, path, body)
        assert (r.status_code, r.json()) == (403, {"detail": "this needs the owner or admin role in the workspace"})
    assert api.alice("GET", f"/rules/{rid}").json()["version"] == 1
    assert len(published(api, 1)) == 1


def test_rules_are_invisible_and_unmodifiable_across_workspaces(api: Api) -> None:  # noqa: F811
    rid = api.alice("POST", "/rules", RULE).json()["id"]
    carol_b = api.as_(CAROL, api.tenants.ws_b)  # an owner, but of B
    assert carol_b("GET", "/rules").json() == {"rules": []}
    for method, path, body in [("GET", f"/rules/{rid}", None), ("PUT", f"/rules/{rid}", RULE),
                               ("POST", f"/rules/{rid}/pause", None), ("POST", f"/rules/{rid}/resume", None),
                               ("POST", f"/rules/{rid}/dry-run", None), ("DELETE", f"/rules/{rid}", None)]:
        r = carol_b(method, path, body)
        assert (r.status_code, r.json()) == (404, {"detail": "rule not found"}), (method, path)
    carol_a = api.as_(CAROL, api.tenants.ws_a)  # asking for A outright
    assert carol_a("GET", f"/rules/{rid}").status_code == 403
    assert carol_a("DELETE", f"/rules/{rid}").status_code == 403
    after = api.alice("GET", f"/rules/{rid}").json()
    assert (after["version"], after["status"], after["name"]) == (1, "active", RULE["name"])
    # B's failed DELETE re-published A's rule unchanged (never a tombstone for it).
    msgs = published(api, 2)
    assert all(v is not None and parse_rule_message(v) == as_v1(after) for _, v in msgs)


def test_failed_publish_is_503_and_a_repeated_put_repairs_it(api: Api) -> None:  # noqa: F811
    app = api.client.app
    good = services_of(app).rules_publisher
    services_of(app).rules_publisher = RulePublisher("127.0.0.1:1", api.settings.kafka.rules_topic, timeout_s=1.0)
    r = api.alice("POST", "/rules", RULE)
    assert (r.status_code, r.json()) == (503, {"detail": "saved but not yet live; retry"})
    location = r.headers["location"]
    rid = location.rsplit("/", 1)[1]
    stored = api.alice("GET", location)
    assert stored.status_code == 200 and stored.json()["version"] == 1  # saved
    services_of(app).rules_publisher = good
    r = api.alice("PUT", location, RULE)
    assert r.status_code == 200 and r.json()["version"] == 1
    [(key, value)] = published(api, 1)
    assert key == rid and value is not None and parse_rule_message(value) == as_v1(r.json())


def test_rules_sync_republishes_and_prunes(api: Api) -> None:  # noqa: F811
    """After restoring the database from a backup: rules only in the database are
    published, ids only on the topic get a tombstone; a second run changes nothing."""
    live = api.alice("POST", "/rules", RULE).json()
    restored = uuid.uuid4()
    body = RuleIn.model_validate({**RULE, "name": "restored"})
    with psycopg.connect(api.database, autocommit=True) as conn:
        conn.execute("INSERT INTO rules (id, workspace_id, name, definition, status, version) "
                     "VALUES (%s, %s, 'restored', %s, 'paused', 3)",
                     (restored, api.tenants.ws_a, Jsonb(definition(body))))
    gone = RuleV1(**body.model_dump(), id=uuid.uuid4(), workspace_id=api.tenants.ws_a, updated_at=datetime.now(UTC))
    RulePublisher(api.settings.kafka.bootstrap, api.settings.kafka.rules_topic).publish([(gone.id, rule_message(gone))])
    env = {**os.environ, "METRICX_DATABASE_URL": api.database, "METRICX_RULES_TOPIC": api.settings.kafka.rules_topic,
           "METRICX_KAFKA_BOOTSTRAP": api.settings.kafka.bootstrap}
    for run in (1, 2):
        out = subprocess.run([sys.executable, "-m", "metricx.cli", "rules", "sync"], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"published 2 rules, {1 if run == 1 else 0} tombstones", out.stdout
    # create, gone, run 1: 2 + 1 tombstone, run 2: 2; the latest per key is what counts
    latest: dict[str, bytes | None] = dict(published(api, 7))
    assert latest[str(gone.id)] is None
    restored_v1 = latest[str(restored)]
    assert restored_v1 is not None
    r = parse_rule_message(restored_v1)
    assert (r.name, r.status, r.version) == ("restored", "paused", 3)
    live_v1 = latest[live["id"]]
    assert live_v1 is not None and parse_rule_message(live_v1) == as_v1(live)


def _oversized_definition(name: str) -> dict[str, Any]:
    """A stored rule the topic's contract accepts (every list within its bounds, but over
    the API's per-rule limits: stored before them, or restored from a backup) whose
    ``metricx.rule.v1`` message is over a megabyte: Kafka's default limit for a message."""
    leaf = {"metric": "spend", "operator": ">=", "value": "80.123456"}
    group = {"op": "or", "conditions": [{"op": "and", "conditions": [leaf] * 20}] * 20}
    body = RuleBody.model_validate({**RULE, "name": name, "conditions": {"op": "and", "conditions": [group] * 20},
                                    "scope": {"level": "ad", "campaign_ids": [f"{i:05d}" + "c" * 123 for i in range(5000)]}})
    return definition(body)


def _insert(database: str, rule_id: uuid.UUID, ws: uuid.UUID, name: str, definition_: dict[str, Any]) -> None:
    """A row written straight into the table (a restored backup, an older API's limits)."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO rules (id, workspace_id, name, definition) VALUES (%s, %s, %s, %s)",
                     (rule_id, ws, name, Jsonb(definition_)))


def test_a_rule_over_the_message_limit_is_a_503_naming_the_stored_rule(api: Api) -> None:  # noqa: F811
    """The producer refuses the message before sending it: still the documented 503
    (saved, not live), never a 500, and the next rule is published as usual."""
    big = uuid.uuid4()
    _insert(api.database, big, api.tenants.ws_a, "huge", _oversized_definition("huge"))
    r = api.alice("POST", f"/rules/{big}/pause")
    assert (r.status_code, r.json()) == (503, {"detail": "saved but not yet live; retry"})
    assert r.headers["location"] == f"/rules/{big}"
    assert api.alice("GET", f"/rules/{big}").json()["status"] == "paused"  # saved
    r = api.alice("POST", "/rules", RULE)
    assert r.status_code == 201, r.text
    [(key, value)] = published(api, 1)
    assert key == r.json()["id"] and value is not None


def test_a_broker_refusing_the_rule_is_a_503(api: Api) -> None:  # noqa: F811
    """However small the topic's limit (whatever the API's own size limits), a refused
    publish is the 503 path with the stored rule in ``Location``."""
    bootstrap = api.settings.kafka.bootstrap
    small = f"metricx.rules.t{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [TopicSpec(small, 1, {"cleanup.policy": "compact", "max.message.bytes": "600"})])
    app = api.client.app
    good = services_of(app).rules_publisher
    services_of(app).rules_publisher = RulePublisher(bootstrap, small, timeout_s=5.0)
    try:
        r = api.alice("POST", "/rules", RULE)
        assert (r.status_code, r.json()) == (503, {"detail": "saved but not yet live; retry"})
        rid = r.headers["location"].rsplit("/", 1)[1]
        assert api.alice("GET", f"/rules/{rid}").status_code == 200
        services_of(app).rules_publisher = good
        assert api.alice("PUT", f"/rules/{rid}", RULE).status_code == 200  # the retry, on a topic that fits
    finally:
        services_of(app).rules_publisher = good
        delete_topics(bootstrap, [small])


def test_rules_sync_skips_and_reports_a_bad_rule_and_publishes_the_rest(api: Api) -> None:  # noqa: F811
    """Ids sort the sync: the bad rules come first, every other workspace's after them."""
    too_big = uuid.UUID("00000000-0000-4000-8000-000000000001")
    not_a_rule = uuid.UUID("00000000-0000-4000-8000-000000000002")
    _insert(api.database, too_big, api.tenants.ws_a, "huge", _oversized_definition("huge"))
    _insert(api.database, not_a_rule, api.tenants.ws_a, "odd", {"name": "odd", "conditions": {"surprise": 1}})
    good = {uuid.UUID(f"ffffffff-0000-4000-8000-00000000000{i}"): ws
            for i, ws in enumerate((api.tenants.ws_a, api.tenants.ws_b))}
    for rid, ws in good.items():
        _insert(api.database, rid, ws, "fine", definition(RuleIn.model_validate(RULE)))
    env = {**os.environ, "METRICX_DATABASE_URL": api.database, "METRICX_RULES_TOPIC": api.settings.kafka.rules_topic,
           "METRICX_KAFKA_BOOTSTRAP": api.settings.kafka.bootstrap}
    out = subprocess.run([sys.executable, "-m", "metricx.cli", "rules", "sync"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, (out.stdout, out.stderr)  # not everything is live: say so
    assert out.stdout.strip().startswith("published 2 rules, 0 tombstones"), out.stdout
    for bad in (too_big, not_a_rule):
        assert f"rule {bad} not published" in out.stderr, out.stderr
    assert len(out.stderr) < 5000  # a reason, not the rule
    latest = dict(published(api, 2))
    assert set(latest) == {str(g) for g in good}
    for rid, ws in good.items():
        value = latest[str(rid)]
        assert value is not None and parse_rule_message(value).workspace_id == ws


# ---- limits: what one workspace may ask of the shared pipeline ----------------------


def _conditions(n: int) -> dict[str, Any]:
    cond = {"metric": "spend", "operator": ">=", "value": "80"}
    return {"op": "or", "conditions": [{"op": "and", "conditions": [cond] * min(20, n - i)} for i in range(0, n, 20)]}


def _seed(a: Api, n: int, accounts: Callable[[int], list[str]] = lambda i: []) -> None:
    """Rules stored directly (as the API would store them), to fill a workspace fast;
    rule ``i`` is scoped to ``accounts(i)``."""
    with psycopg.connect(a.database, autocommit=True) as conn:
        for i in range(n):
            body = RuleIn.model_validate({**RULE, "scope": {"level": "ad", "account_ids": accounts(i)}})
            conn.execute("INSERT INTO rules (workspace_id, name, definition) VALUES (%s, %s, %s)",
                         (a.tenants.ws_a, f"seeded {i}", Jsonb(definition(body))))


def _limit_msg(r: Any) -> str:
    assert r.status_code == 422, r.text[:500]
    return str(r.json()["detail"][0]["msg"])


def test_per_rule_limits_are_422s_naming_the_limit(api: Api) -> None:  # noqa: F811
    """Before: a rule of 8,000 conditions (depth 3 x 20) was accepted."""
    assert api.alice("POST", "/rules", {**RULE, "conditions": _conditions(50)}).status_code == 201
    assert "at most 50 conditions; this one has 51" in _limit_msg(
        api.alice("POST", "/rules", {**RULE, "conditions": _conditions(51)}))
    ids = [f"{i:03d}" + "c" * 97 for i in range(170)]
    assert "at most 16 KiB" in _limit_msg(api.alice("POST", "/rules", {**RULE, "scope": {"campaign_ids": ids}}))
    rid = api.alice("GET", "/rules").json()["rules"][0]["id"]
    assert "at most 50 conditions" in _limit_msg(api.alice("PUT", f"/rules/{rid}", {**RULE, "conditions": _conditions(60)}))
    assert "at most 50 conditions" in _limit_msg(api.alice("POST", "/rules/dry-run", {**RULE, "conditions": _conditions(60)}))
    # The reported rule does not even fit in a request body any more.
    leaf = {"op": "or", "conditions": [{"metric": "spend", "operator": ">=", "value": "80"}] * 20}
    huge = {**RULE, "conditions": {"op": "or", "conditions": [{"op": "or", "conditions": [leaf] * 20}] * 20}}
    assert api.alice("POST", "/rules", huge).status_code == 413
    assert len(api.alice("GET", "/rules").json()["rules"]) == 1


def test_rules_per_workspace_limit(api: Api) -> None:  # noqa: F811
    _seed(api, 199, lambda i: [f"act-{i}"])  # one per ad account: no account meets many
    first = api.alice("POST", "/rules", RULE)
    assert first.status_code == 201  # the 200th
    msg = _limit_msg(api.alice("POST", "/rules", RULE))
    assert "at most 200 rules; this one has 200" in msg
    # Another workspace is not counted against this one.
    carol_b = api.as_(CAROL, api.tenants.ws_b)
    assert carol_b("POST", "/rules", RULE).status_code == 201
    # Editing a rule takes no extra place; deleting one makes room.
    assert api.alice("PUT", f"/rules/{first.json()['id']}", {**RULE, "name": "edited"}).status_code == 200
    assert api.alice("DELETE", f"/rules/{first.json()['id']}").status_code == 204
    assert api.alice("POST", "/rules", RULE).status_code == 201


def test_rules_per_ad_account_limit(api: Api) -> None:  # noqa: F811
    """An ad account meets the rules scoped to it and those for every account: at most 50."""
    _seed(api, 48, lambda i: ["act-1"])
    _seed(api, 1)  # for every account: act-1 meets 49 rules
    scoped = {**RULE, "scope": {"level": "ad", "account_ids": ["act-1", "act-2"]}}
    fiftieth = api.alice("POST", "/rules", scoped)
    assert fiftieth.status_code == 201
    assert "ad account 'act-1' would meet 51" in _limit_msg(api.alice("POST", "/rules", scoped))
    assert "ad account 'act-1' would meet 51" in _limit_msg(api.alice("POST", "/rules", RULE))  # for every account
    other = api.alice("POST", "/rules", {**RULE, "scope": {"level": "ad", "account_ids": ["act-2"]}})
    assert other.status_code == 201  # act-2 meets 3
    r = api.alice("PUT", f"/rules/{other.json()['id']}", scoped)
    assert "ad account 'act-1' would meet 51" in _limit_msg(r)
    # Moving the 50th rule off act-1 frees its place.
    moved = api.alice("PUT", f"/rules/{fiftieth.json()['id']}",
                      {**RULE, "scope": {"level": "ad", "account_ids": ["act-3"]}})
    assert moved.status_code == 200
    assert api.alice("POST", "/rules", scoped).status_code == 201


def test_a_rule_the_pipeline_disabled_shows_why_and_can_be_resumed(api: Api) -> None:  # noqa: F811
    """``disable_rules`` + ``publish_ids`` is what the pipeline's rules feed does when a
    workspace's rules go over the evaluation budget (tests/integration covers the feed)."""
    rid = api.alice("POST", "/rules", RULE).json()["id"]
    reason = "rule evaluation over budget: 17 of this workspace's last 17 evaluated snapshots took more than 2 ms"
    with psycopg.connect(api.database, autocommit=True, row_factory=dict_row) as conn:
        changed = disable_rules(conn, api.tenants.ws_a, [uuid.UUID(rid)], reason)
        assert changed == [uuid.UUID(rid)]
        publish_ids(conn, RulePublisher(api.settings.kafka.bootstrap, api.settings.kafka.rules_topic), changed)
        assert disable_rules(conn, api.tenants.ws_a, [uuid.UUID(rid)], reason) == []  # only active rules
    shown = api.alice("GET", f"/rules/{rid}").json()
    assert (shown["status"], shown["last_error"], shown["version"]) == ("disabled", reason, 2)
    assert api.as_(VICTOR, api.tenants.ws_a)("GET", "/rules").json()["rules"][0]["last_error"] == reason
    [_, (key, value)] = published(api, 2)
    assert key == rid and value is not None and parse_rule_message(value).status == "disabled"
    resumed = api.alice("POST", f"/rules/{rid}/resume")
    assert resumed.status_code == 200
    assert (resumed.json()["status"], resumed.json()["last_error"], resumed.json()["version"]) == ("active", None, 3)
    latest = published(api, 3)[-1][1]
    assert latest is not None and parse_rule_message(latest).status == "active"


# ---- dry-run against stored data, checked by an oracle summed here from the inserted rows


@dataclass(frozen=True)
class Row:
    account: str
    tz: str
    currency: str
    campaign: str
    adset: str
    ad: str
    days_back: int  # 0 = the account's local today
    spend: str
    impressions: int
    clicks: int = 0
    conversions: str = "0"
    revenue: str = "0"


ACCOUNTS = {"act-utc": ("UTC", "USD"), "act-kiri": ("Pacific/Kiritimati", "USD"),
            "act-pago": ("Pacific/Pago_Pago", "USD"), "act-eur": ("Europe/Berlin", "EUR")}


def _rows() -> list[Row]:
    rows = []
    for acct, (tz, cur) in ACCOUNTS.items():
        rows += [
            Row(acct, tz, cur, "c1", "s1", "fires", 0, "90", 2000, 20),
            Row(acct, tz, cur, "c1", "s1", "fires", 1, "10", 100, 1),
            Row(acct, tz, cur, "c1", "s1", "thin", 0, "90", 500, 5),
            Row(acct, tz, cur, "c1", "s2", "sells", 0, "120", 3000, 30, "2", "300"),
            Row(acct, tz, cur, "c2", "s3", "yesterday-only", 1, "200", 5000, 50),
            Row(acct, tz, cur, "c2", "s3", "idle", 0, "0", 0),
            Row(acct, tz, cur, "c2", "s4", "no-spend", 0, "0", 1500, 3),
        ]
    return rows


def _write_rows(database: str, ws: uuid.UUID, rows: list[Row]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    snaps = []
    for r in rows:
        local_today = now.astimezone(ZoneInfo(r.tz)).date()
        snaps.append(snapshot(ws, account=r.account, campaign=r.campaign, adset=r.adset, ad=r.ad, tz=r.tz,
                              currency=r.currency, day=local_today - timedelta(days=r.days_back),
                              captured_at=now - timedelta(minutes=5 + r.days_back), spend=r.spend,
                              impressions=r.impressions, clicks=r.clicks, conversions=r.conversions,
                              revenue=r.revenue))
    write(database, snaps)


def _oracle(rows: list[Row], level: str, days: int,
            fires: Callable[[dict[str, Decimal], dict[str, Decimal | None]], bool],
            guard: Callable[[dict[str, Decimal]], bool]) -> tuple[dict[tuple[str, str], dict[str, Any]], int, int, int]:
    """Sum per (account, target) over the rows in the window, judge by hand."""
    target: Callable[[Row], str] = {
        "ad": lambda r: r.ad, "adset": lambda r: r.adset, "campaign": lambda r: r.campaign,
    }[level]
    sums: dict[tuple[str, str], dict[str, Decimal]] = {}
    for r in rows:
        if r.days_back < days:
            s = sums.setdefault((r.account, target(r)), dict.fromkeys(
                ("spend", "impressions", "clicks", "conversions", "revenue"), Decimal(0)))
            s["spend"] += Decimal(r.spend)
            s["impressions"] += r.impressions
            s["clicks"] += r.clicks
            s["conversions"] += Decimal(r.conversions)
            s["revenue"] += Decimal(r.revenue)
    firing, idle, guarded = {}, 0, 0
    for key, s in sums.items():
        ratios = {"roas": s["revenue"] / s["spend"] if s["spend"] else None,
                  "cpa": s["spend"] / s["conversions"] if s["conversions"] else None}
        if s["spend"] == 0 and s["impressions"] == 0:
            idle += 1
        elif not guard(s):
            guarded += 1
        elif fires(s, ratios):
            firing[key] = s
    return firing, len(sums), idle, guarded


def _check(out: dict[str, Any], expected: tuple[dict[tuple[str, str], dict[str, Any]], int, int, int]) -> None:
    firing, evaluated, idle, guarded = expected
    assert (out["evaluated"], out["no_delivery"], out["guarded_out"], out["would_fire"]) == \
        (evaluated, idle, guarded, len(firing))
    got = {(e["account_id"], e["entity_id"]): e for e in out["entities"]}
    assert set(got) == set(firing)
    for key, s in firing.items():
        e = got[key]
        assert e["currency"] == ACCOUNTS[key[0]][1]
        assert Decimal(e["observed"]["spend"]) == s["spend"] and e["observed"]["impressions"] == s["impressions"]
        assert Decimal(e["observed"]["conversions"]) == s["conversions"]
    spends = [Decimal(e["observed"]["spend"]) for e in out["entities"]]
    assert spends == sorted(spends, reverse=True)


def test_dry_run_matches_an_oracle_per_window_and_level(api: Api) -> None:  # noqa: F811
    rows = _rows()
    _write_rows(api.database, api.tenants.ws_a, rows)
    _write_rows(api.database, api.tenants.ws_b, rows)  # another workspace's data never counts

    def spent_80_no_sale(s: dict[str, Decimal], _: dict[str, Decimal | None]) -> bool:
        return s["spend"] >= 80 and s["conversions"] == 0

    def guard(s: dict[str, Decimal]) -> bool:
        return s["spend"] >= 50 and s["impressions"] >= 1000

    for level in ("ad", "adset", "campaign"):
        for window, days in (({"kind": "today"}, 1), ({"kind": "days", "n": 2}, 2), ({"kind": "days", "n": 7}, 7)):
            body = {**RULE, "scope": {"level": level}, "window": window}
            r = api.alice("POST", "/rules/dry-run", body)
            assert r.status_code == 200, r.text
            _check(r.json(), _oracle(rows, level, days, spent_80_no_sale, guard))
            assert r.json()["window"] == ("today" if window["kind"] == "today" else f"days:{days}")
    # Scope filters: one account (its own timezone's today), and a campaign list.
    r = api.alice("POST", "/rules/dry-run", {**RULE, "scope": {"account_ids": ["act-kiri"]}}).json()
    _check(r, _oracle([x for x in rows if x.account == "act-kiri"], "ad", 1, spent_80_no_sale, guard))
    r = api.alice("POST", "/rules/dry-run", {**RULE, "scope": {"level": "adset", "campaign_ids": ["c2"]},
                                             "window": {"kind": "days", "n": 2}}).json()
    _check(r, _oracle([x for x in rows if x.campaign == "c2"], "adset", 2, spent_80_no_sale, guard))
    # A saved rule dry-runs the same way; limit caps the list, not the counts.
    rid = api.alice("POST", "/rules", {**RULE, "window": {"kind": "days", "n": 2}}).json()["id"]
    r = api.alice("POST", f"/rules/{rid}/dry-run", limit=2).json()
    full = _oracle(rows, "ad", 2, spent_80_no_sale, guard)
    assert r["would_fire"] == len(full[0]) > 2 and len(r["entities"]) == 2


def test_undefined_ratios_never_match(api: Api) -> None:  # noqa: F811
    rows = _rows()
    _write_rows(api.database, api.tenants.ws_a, rows)
    for cond in ({"metric": "roas", "operator": "<", "value": "1"}, {"metric": "cpa", "operator": ">", "value": "1"},
                 {"metric": "roas", "operator": "!=", "value": "5"}, {"metric": "cpa", "operator": ">=", "value": "0"}):
        body = {**RULE, "conditions": {"conditions": [cond]}, "guards": {}}
        out = api.alice("POST", "/rules/dry-run", body).json()
        metric = cond["metric"]

        def fires(s: dict[str, Decimal], ratios: dict[str, Decimal | None], metric: str = metric,
                  op: str = cond["operator"], v: Decimal = Decimal(cond["value"])) -> bool:
            x = ratios[metric]
            return x is not None and {"<": x < v, ">": x > v, "!=": x != v, ">=": x >= v}[op]

        _check(out, _oracle(rows, "ad", 1, fires, lambda s: True))
        assert all(e["observed"][metric] is not None for e in out["entities"])
    # "no-spend" (impressions, zero spend): ROAS undefined, so "roas < 1" passes it by even
    # though spend-based reasoning would say it "returned nothing".
    out = api.alice("POST", "/rules/dry-run", {**RULE, "guards": {}, "conditions": {"conditions": [
        {"metric": "roas", "operator": "<", "value": "1"}]}}).json()
    assert "no-spend" not in {e["entity_id"] for e in out["entities"]}
    assert {e["entity_id"] for e in out["entities"]} == {"fires", "thin"}  # spent, sold nothing


def test_dry_run_hours_window_uses_captured_deltas(api: Api) -> None:  # noqa: F811
    now = datetime.now(UTC).replace(microsecond=0)
    day = (now - timedelta(minutes=30)).date()
    ws = api.tenants.ws_a
    write(api.database, [
        snapshot(ws, ad="ad-h", day=day, captured_at=now - timedelta(hours=3), spend="40", impressions=1000),
        snapshot(ws, ad="ad-h", day=day, captured_at=now - timedelta(minutes=30), spend="100", impressions=1500),
    ])
    rule = {**RULE, "guards": {}, "conditions": {"conditions": [{"metric": "spend", "operator": ">=", "value": "1"}]}}
    one = api.alice("POST", "/rules/dry-run", {**rule, "window": {"kind": "hours", "n": 1}}).json()
    four = api.alice("POST", "/rules/dry-run", {**rule, "window": {"kind": "hours", "n": 4}}).json()
    assert [(e["entity_id"], e["observed"]["spend"], e["observed"]["impressions"]) for e in one["entities"]] == \
        [("ad-h", "60.000000", 500)]  # only the delta captured in the last hour
    assert [(e["observed"]["spend"], e["observed"]["impressions"]) for e in four["entities"]] == \
        [("100.000000", 1500)]


def test_dry_run_names_and_name_filter(api: Api) -> None:  # noqa: F811
    ws = api.tenants.ws_a
    _write_rows(api.database, ws, [r for r in _rows() if r.account == "act-utc"])
    with psycopg.connect(api.database, autocommit=True) as conn:
        conn.execute("INSERT INTO connections (workspace_id, provider, account_id, token_key_id, token_ciphertext) "
                     "VALUES (%s, 'meta', 'act-utc', 'k', '\\x00')", (ws,))
        conn.execute("INSERT INTO entities (workspace_id, provider, account_id, entity_id, entity_level, name, "
                     "campaign_id) VALUES (%s, 'meta', 'act-utc', 'fires', 'ad', 'Summer Sale — video', 'c1'), "
                     "(%s, 'meta', 'act-utc', 'c1', 'campaign', 'Prospecting', 'c1')", (ws, ws))
    out = api.alice("POST", "/rules/dry-run", RULE).json()
    [e] = out["entities"]
    assert (e["name"], e["campaign_id"], e["campaign_name"], e["adset_id"]) == \
        ("Summer Sale — video", "c1", "Prospecting", "s1")
    hit = api.alice("POST", "/rules/dry-run", {**RULE, "scope": {"name_contains": "SUMMER"}}).json()
    assert [x["entity_id"] for x in hit["entities"]] == ["fires"]
    miss = api.alice("POST", "/rules/dry-run", {**RULE, "scope": {"name_contains": "winter"}}).json()
    assert (miss["evaluated"], miss["entities"]) == (0, [])  # unknown or other names never match
