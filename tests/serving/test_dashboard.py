"""/dashboard, /analytics/timeseries and /entities return what the analysts' SQL over
the same tables returns, for data committed by the real writer (InsightStore) after the
real delta logic; and never anything from another workspace."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from serving.container import services_of
from tests.databases import refresh_aggregates
from tests.serving.conftest import Issuer, Tenants, days_ago, snapshot, today_utc, utc, write

D = Decimal
RATIOS_SQL = """
  round(sum(revenue) / NULLIF(sum(spend), 0), 6) AS roas,
  round(sum(spend) / NULLIF(sum(conversions), 0), 6) AS cpa,
  round(sum(spend) / NULLIF(sum(clicks), 0), 6) AS cpc,
  round(sum(clicks)::numeric / NULLIF(sum(impressions), 0), 6) AS ctr,
  round(1000 * sum(spend) / NULLIF(sum(impressions), 0), 6) AS cpm"""
SUMS_SQL = "sum(spend) AS spend, sum(impressions) AS impressions, sum(clicks) AS clicks, " \
           "sum(conversions) AS conversions, sum(revenue) AS revenue"


def now_minus(minutes: int) -> datetime:
    """``minutes`` ago, but within today (UTC): shortly after midnight, a second per
    minute after it, so that a larger ``minutes`` is still the earlier capture."""
    t = datetime.now(UTC) - timedelta(minutes=minutes)
    midnight = datetime.combine(today_utc(), datetime.min.time(), tzinfo=UTC)
    return max(t, midnight + timedelta(seconds=120 - minutes))


def populate(url: str, t: Tenants) -> None:
    a, b = t.ws_a, t.ws_b
    today = today_utc()
    snaps = [
        # today, two polls of the same ad: only the latest cumulative counts
        snapshot(a, provider="meta", campaign="cmp-1", ad="ad-1", day=today, captured_at=now_minus(50),
                 spend="10.50", impressions=1000, clicks=20, conversions="1", revenue="30"),
        snapshot(a, provider="meta", campaign="cmp-1", ad="ad-1", day=today, captured_at=now_minus(5),
                 spend="25.25", impressions=2500, clicks=51, conversions="2", revenue="80.10"),
        snapshot(a, provider="meta", campaign="cmp-1", ad="ad-2", day=today, captured_at=now_minus(5),
                 spend="4.75", impressions=300, clicks=3, conversions="0", revenue="0"),
        snapshot(a, provider="google", account="cus-9", campaign="cmp-g", ad="g-1", day=today,
                 captured_at=now_minus(20), spend="70", impressions=7000, clicks=140, conversions="3.5",
                 revenue="210.75"),
        # a paused campaign: impressions but no spend -> its ROAS/CPC are null, not 0
        snapshot(a, provider="google", account="cus-9", campaign="cmp-paused", ad="g-2", day=today,
                 captured_at=now_minus(20), impressions=10),
        # another currency in the same workspace: never summed with USD
        snapshot(a, provider="meta", account="act-eu", campaign="cmp-eu", ad="eu-1", day=today,
                 captured_at=now_minus(5), currency="EUR", spend="9.99", impressions=100, clicks=2),
        # earlier days (previous periods)
        snapshot(a, provider="meta", campaign="cmp-1", ad="ad-1", day=days_ago(1), captured_at=utc(days_ago(1), 23, 50),
                 spend="40", impressions=4000, clicks=80, conversions="2", revenue="100"),
        snapshot(a, provider="google", account="cus-9", campaign="cmp-g", ad="g-1", day=days_ago(3),
                 captured_at=utc(days_ago(3), 12), spend="15.5", impressions=900, clicks=9, revenue="7"),
        snapshot(a, provider="google", account="cus-9", campaign="cmp-g", ad="g-1", day=days_ago(10),
                 captured_at=utc(days_ago(10), 12), spend="33.3", impressions=3000, clicks=30, conversions="1",
                 revenue="99.9"),
        # workspace B, same ids and currency: must never show up for A
        snapshot(b, provider="meta", campaign="cmp-1", ad="ad-1", day=today, captured_at=now_minus(5),
                 spend="9999", impressions=99999, clicks=999, conversions="99", revenue="99999"),
        snapshot(b, provider="meta", campaign="cmp-secret-b", ad="b-1", day=today, captured_at=now_minus(5),
                 spend="1", impressions=1, clicks=1),
    ]
    write(url, snaps)


@pytest.fixture
def populated(database: str, tenants: Tenants) -> str:
    populate(database, tenants)
    return database


def analyst(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(sql, params)
        cols = [c.name for c in cur.description or []]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def num(v: Any) -> Any:
    return None if v is None else (int(v) if isinstance(v, int) else D(v))


def get(client: TestClient, issuer: Issuer, t: Tenants, path: str, **params: str) -> dict[str, Any]:
    r = client.get(path, params={"workspace_id": str(t.ws_a), **params},
                   headers={"Authorization": f"Bearer {issuer.token(t.alice)}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def period_totals(url: str, t: Tenants, start: date, end: date, currency: str = "USD") -> dict[str, Any]:
    rows = analyst(url, f"SELECT {SUMS_SQL}, {RATIOS_SQL} FROM metrics_daily WHERE workspace_id = %(ws)s "
                        "AND currency = %(cur)s AND report_date BETWEEN %(s)s AND %(e)s",
                   ws=t.ws_a, cur=currency, s=start, e=end)
    return {k: (v if v is not None else (0 if k in ("spend", "impressions", "clicks", "conversions", "revenue")
                                         else None)) for k, v in rows[0].items()}


@pytest.mark.parametrize(("timeframe", "days"), [("today", 1), ("yesterday", 1), ("last_7_days", 7),
                                                 ("last_30_days", 30)])
def test_kpis_equal_the_analyst_query(client: TestClient, issuer: Issuer, tenants: Tenants, populated: str,
                                      timeframe: str, days: int) -> None:
    body = get(client, issuer, tenants, "/dashboard", timeframe=timeframe)
    end = today_utc() - timedelta(days=1 if timeframe == "yesterday" else 0)
    start = end - timedelta(days=days - 1)
    assert body["period"] == {"start": start.isoformat(), "end": end.isoformat()}
    assert body["currency"] == "USD"
    assert body["currencies"] == (["USD"] if timeframe == "yesterday" else ["USD", "EUR"])
    now = period_totals(populated, tenants, start, end)
    prev = period_totals(populated, tenants, start - timedelta(days=days), start - timedelta(days=1))
    for name, kv in body["kpis"].items():
        assert num(kv["value"]) == num(now[name]), name
        assert num(kv["previous"]) == num(prev[name]), name
        expected_change = (None if now[name] is None or not prev[name]
                           else (D(now[name]) - D(prev[name])) / D(prev[name]))
        got = num(kv["change"])
        assert (got is None) == (expected_change is None), name
        if got is not None and expected_change is not None:
            assert abs(got - expected_change) <= D("0.0000005"), name


def test_today_numbers_by_hand(client: TestClient, issuer: Issuer, tenants: Tenants, populated: str) -> None:
    """The latest cumulative values written above, added by hand: USD today."""
    k = get(client, issuer, tenants, "/dashboard", timeframe="today")["kpis"]
    assert D(k["spend"]["value"]) == D("25.25") + D("4.75") + D("70")
    assert k["impressions"]["value"] == 2500 + 300 + 7000 + 10
    assert D(k["revenue"]["value"]) == D("80.10") + D("210.75")
    assert D(k["roas"]["value"]) == D("2.908500")  # 290.85 / 100
    assert D(k["spend"]["previous"]) == D("40")
    assert D(k["spend"]["change"]) == D("1.5")


def test_top_campaigns_and_mix_and_series(client: TestClient, issuer: Issuer, tenants: Tenants,
                                          populated: str) -> None:
    body = get(client, issuer, tenants, "/dashboard", timeframe="today")
    expected = analyst(populated, f"SELECT provider, account_id, campaign_id, {SUMS_SQL}, {RATIOS_SQL} "
                                  "FROM metrics_daily WHERE workspace_id = %(ws)s AND currency = 'USD' "
                                  "AND report_date = %(d)s GROUP BY 1, 2, 3 ORDER BY spend DESC, 1, 2, 3",
                       ws=tenants.ws_a, d=today_utc())
    got = [{k: (num(v) if k not in ("provider", "account_id", "campaign_id") else v) for k, v in row.items()}
           for row in body["top_campaigns"]]
    assert got == [{k: (num(v) if k not in ("provider", "account_id", "campaign_id") else v)
                    for k, v in row.items()} for row in expected]
    paused = next(r for r in body["top_campaigns"] if r["campaign_id"] == "cmp-paused")
    assert paused["roas"] is None and paused["cpc"] is None and D(paused["ctr"]) == 0
    assert {m["provider"]: (D(m["spend"]), D(m["share"])) for m in body["spend_mix"]} == {
        "google": (D("70"), D("0.7")), "meta": (D("30"), D("0.3"))}
    assert body["grain"] == "15m"
    series = analyst(populated, "SELECT provider, bucket_start, sum(spend) AS spend FROM metrics_15m "
                                "WHERE workspace_id = %(ws)s AND currency = 'USD' AND report_date = %(d)s "
                                "GROUP BY 1, 2 ORDER BY 1, 2", ws=tenants.ws_a, d=today_utc())
    flat = [(s["provider"], datetime.fromisoformat(p["bucket_start"]), D(p["spend"]))
            for s in body["series"] for p in s["points"]]
    assert flat == [(r["provider"], r["bucket_start"], r["spend"]) for r in series]
    assert sum(x[2] for x in flat) == D("100")


def test_week_is_hourly_from_metrics_hourly(client: TestClient, issuer: Issuer, tenants: Tenants,
                                            populated: str) -> None:
    body = get(client, issuer, tenants, "/dashboard", timeframe="last_7_days")
    assert body["grain"] == "hour"
    rows = analyst(populated, "SELECT provider, bucket_start, sum(clicks) AS clicks FROM metrics_hourly "
                              "WHERE workspace_id = %(ws)s AND currency = 'USD' AND report_date > %(d)s "
                              "GROUP BY 1, 2 ORDER BY 1, 2", ws=tenants.ws_a, d=today_utc() - timedelta(days=7))
    flat = [(s["provider"], datetime.fromisoformat(p["bucket_start"]), p["clicks"])
            for s in body["series"] for p in s["points"]]
    assert flat == [(r["provider"], r["bucket_start"], r["clicks"]) for r in rows]


def test_hourly_by_campaign_shows_a_restatement_at_once(client: TestClient, issuer: Issuer, tenants: Tenants,
                                                       database: str) -> None:
    """The API's hourly series answer from the tables the commit keeps exact, never from
    a continuous aggregate: a restatement into an hour TimescaleDB had materialised shows
    in the next answer, not after the next refresh policy run."""
    day = days_ago(3)
    write(database, [snapshot(tenants.ws_a, campaign="cmp-1", ad="ad-1", day=day, captured_at=utc(day, 23, 50),
                              spend="12", impressions=100, clicks=5)])
    refresh_aggregates(database)  # the 23:00 hour of that day is materialised
    write(database, [snapshot(tenants.ws_a, campaign="cmp-1", ad="ad-1", day=day,
                              captured_at=datetime.now(UTC) - timedelta(minutes=1), spend="9.5", impressions=100,
                              clicks=4)])  # restated: booked in the day's last bucket
    exact = analyst(database, "SELECT campaign_id, time_bucket(INTERVAL '1 hour', bucket_start) AS hour, "
                              "sum(spend) AS spend FROM metrics_15m WHERE workspace_id = %(ws)s AND currency = 'USD' "
                              "AND report_date > %(d)s GROUP BY 1, 2 ORDER BY 1, 2",
                    ws=tenants.ws_a, d=today_utc() - timedelta(days=7))
    assert [r["spend"] for r in exact] == [D("9.5")]
    body = get(client, issuer, tenants, "/analytics/timeseries", metric="spend", grain="hour",
               timeframe="last_7_days", group_by="campaign_id")
    flat = [(g["key"], datetime.fromisoformat(p["bucket_start"]), num(p["value"])) for g in body["groups"]
            for p in g["points"]]
    assert flat == [(r["campaign_id"], r["hour"], r["spend"]) for r in exact]


def test_month_daily_series_and_mix_equal_the_analyst_query(client: TestClient, issuer: Issuer, tenants: Tenants,
                                                             populated: str) -> None:
    """Beyond 7 days the series, the spend mix and the KPIs come from the account-day
    rollup: the same numbers as metrics_daily, by provider and day."""
    body = get(client, issuer, tenants, "/dashboard", timeframe="last_30_days")
    assert body["grain"] == "day"
    start = today_utc() - timedelta(days=29)
    rows = analyst(populated, f"SELECT provider, report_date, {SUMS_SQL} FROM metrics_daily "
                              "WHERE workspace_id = %(ws)s AND currency = 'USD' AND report_date >= %(d)s "
                              "GROUP BY 1, 2 ORDER BY 1, 2", ws=tenants.ws_a, d=start)
    measures = ("spend", "impressions", "clicks", "conversions", "revenue")
    flat = [(s["provider"], date.fromisoformat(p["bucket_start"]), *(num(p[m]) for m in measures))
            for s in body["series"] for p in s["points"]]
    assert flat == [(r["provider"], r["report_date"], *(num(r[m]) for m in measures)) for r in rows]
    assert len({r["report_date"] for r in rows}) > 1  # several days, more than one row per provider
    mix = analyst(populated, "SELECT provider, sum(spend) AS spend FROM metrics_daily WHERE workspace_id = %(ws)s "
                             "AND currency = 'USD' AND report_date >= %(d)s GROUP BY 1 ORDER BY 2 DESC, 1",
                  ws=tenants.ws_a, d=start)
    assert [(m["provider"], D(m["spend"])) for m in body["spend_mix"]] == [(r["provider"], r["spend"]) for r in mix]


@pytest.mark.parametrize("group_by", ["provider", "account_id", "campaign_id"])
def test_daily_timeseries_by_any_group_equals_the_analyst_query(client: TestClient, issuer: Issuer,
                                                                tenants: Tenants, populated: str,
                                                                group_by: str) -> None:
    """Day grain reads the account-day rollup unless a campaign is asked for: either way
    the numbers are metrics_daily's."""
    body = get(client, issuer, tenants, "/analytics/timeseries", metric="spend", grain="day",
               timeframe="last_30_days", group_by=group_by)
    rows = analyst(populated, f"SELECT {group_by} AS key, report_date, sum(spend) AS spend FROM metrics_daily "
                              "WHERE workspace_id = %(ws)s AND currency = 'USD' AND report_date > %(d)s "
                              "GROUP BY 1, 2 ORDER BY 1, 2", ws=tenants.ws_a, d=today_utc() - timedelta(days=30))
    flat = [(g["key"], date.fromisoformat(p["bucket_start"]), num(p["value"])) for g in body["groups"]
            for p in g["points"]]
    assert flat == [(r["key"], r["report_date"], r["spend"]) for r in rows]


def test_the_rollups_equal_metrics_daily(populated: str) -> None:
    """What the dashboard reads instead of metrics_daily, after the real writer."""
    key = "workspace_id, provider, account_id, report_date, currency"
    sums = "sum(spend), sum(impressions), sum(clicks), sum(conversions), sum(revenue)"
    expected = analyst(populated, f"SELECT {key}, {sums} FROM metrics_daily GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5")
    assert expected
    for table in ("metrics_account_daily", "metrics_campaign_daily"):
        assert analyst(populated, f"SELECT {key}, {sums} FROM {table} GROUP BY 1, 2, 3, 4, 5 "
                                  "ORDER BY 1, 2, 3, 4, 5") == expected, table


def test_other_currency_on_request(client: TestClient, issuer: Issuer, tenants: Tenants, populated: str) -> None:
    body = get(client, issuer, tenants, "/dashboard", timeframe="today", currency="EUR")
    assert body["currency"] == "EUR"
    assert D(body["kpis"]["spend"]["value"]) == D("9.99")
    assert D(body["kpis"]["roas"]["value"]) == 0  # revenue 0 over real spend: a true 0
    assert body["kpis"]["cpa"]["value"] is None  # no conversions: undefined
    assert body["kpis"]["spend"]["change"] is None  # nothing the day before



def test_nothing_from_workspace_b(client: TestClient, issuer: Issuer, tenants: Tenants, populated: str) -> None:
    for path, params in (("/dashboard", {"timeframe": "today"}), ("/entities", {}),
                         ("/analytics/timeseries", {"metric": "spend", "group_by": "campaign_id"})):
        text = str(get(client, issuer, tenants, path, **params))
        assert "cmp-secret-b" not in text and "9999" not in text, path


def test_timeseries_grouped_and_filtered(client: TestClient, issuer: Issuer, tenants: Tenants,
                                         populated: str) -> None:
    body = get(client, issuer, tenants, "/analytics/timeseries", metric="cpc", grain="day",
               timeframe="last_30_days", group_by="campaign_id", provider="google")
    rows = analyst(populated, "SELECT campaign_id, report_date, round(sum(spend) / NULLIF(sum(clicks), 0), 6) AS cpc "
                              "FROM metrics_daily WHERE workspace_id = %(ws)s AND currency = 'USD' "
                              "AND provider = 'google' AND report_date > %(d)s GROUP BY 1, 2 ORDER BY 1, 2",
                   ws=tenants.ws_a, d=today_utc() - timedelta(days=30))
    flat = [(g["key"], date.fromisoformat(p["bucket_start"]), num(p["value"])) for g in body["groups"]
            for p in g["points"]]
    assert flat == [(r["campaign_id"], r["report_date"], r["cpc"]) for r in rows]
    assert any(v is None for _, _, v in flat)  # the paused campaign: no clicks -> null CPC


def test_entities_tree(client: TestClient, issuer: Issuer, tenants: Tenants, populated: str) -> None:
    camps = get(client, issuer, tenants, "/entities")["campaigns"]
    tree = {(c["provider"], c["campaign_id"]): sorted(a["entity_id"] for s in c["adsets"] for a in s["ads"])
            for c in camps}
    assert tree == {("google", "cmp-g"): ["g-1"], ("google", "cmp-paused"): ["g-2"],
                    ("meta", "cmp-1"): ["ad-1", "ad-2"], ("meta", "cmp-eu"): ["eu-1"]}


@pytest.mark.parametrize(("path", "params", "fragment"), [
    ("/dashboard", {"timeframe": "fortnight"}, "timeframe"),
    ("/dashboard", {"from": "2026-02-10", "to": "2026-02-01"}, "'from' must not be after 'to'"),
    ("/dashboard", {"from": "2026-02-10"}, "needs both"),
    ("/dashboard", {"from": "yesterday", "to": "2026-02-01"}, "from"),
    ("/dashboard", {"currency": "usd"}, "currency"),
    ("/dashboard", {"top": "0"}, "top"),
    ("/analytics/timeseries", {"metric": "reach"}, "metric"),
    ("/analytics/timeseries", {"metric": "spend", "grain": "15m", "timeframe": "last_30_days"}, "15m"),
    ("/analytics/timeseries", {"metric": "spend", "group_by": "entity_id; drop table x"}, "group_by"),
    ("/dashboard", {"workspace_id": "not-a-uuid"}, "UUID"),
])
def test_invalid_input_is_a_clear_422(client: TestClient, issuer: Issuer, tenants: Tenants, path: str,
                                      params: dict[str, str], fragment: str) -> None:
    r = client.get(path, params={"workspace_id": str(tenants.ws_a), **params},
                   headers={"Authorization": f"Bearer {issuer.token(tenants.alice)}"})
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_entities_named_from_synced_hierarchy(client: TestClient, issuer: Issuer, tenants: Tenants,
                                              populated: str) -> None:
    """With the synced ``entities`` table (connections migration): names and statuses,
    and an ad that has not delivered yet; workspace B's names never leak."""
    with psycopg.connect(populated, autocommit=True) as conn:
        for ws in (tenants.ws_a, tenants.ws_b):
            conn.execute("INSERT INTO connections (workspace_id, provider, account_id, token_key_id, "
                         "token_ciphertext) VALUES (%s, 'meta', 'act-1', 'k1', '\\x00')", (ws,))
        rows = [
            (tenants.ws_a, "cmp-1", "campaign", "Spring sale", "ACTIVE", None, None),
            (tenants.ws_a, "set-1", "adset", "Lookalikes", "ACTIVE", "cmp-1", None),
            (tenants.ws_a, "ad-1", "ad", "Red shoes video", "PAUSED", "cmp-1", "set-1"),
            (tenants.ws_a, "ad-new", "ad", "Not delivered yet", "ACTIVE", "cmp-1", "set-1"),
            (tenants.ws_b, "cmp-1", "campaign", "B secret name", "ACTIVE", None, None),
        ]
        for ws, eid, level, name, status, camp, adset in rows:
            conn.execute("INSERT INTO entities (workspace_id, provider, account_id, entity_id, entity_level, name, "
                         "status, campaign_id, adset_id) VALUES (%s, 'meta', 'act-1', %s, %s, %s, %s, %s, %s)",
                         (ws, eid, level, name, status, camp, adset))
    camps = get(client, issuer, tenants, "/entities")["campaigns"]
    spring = next(c for c in camps if c["campaign_id"] == "cmp-1")
    assert (spring["name"], spring["status"]) == ("Spring sale", "ACTIVE")
    [adset] = spring["adsets"]
    assert adset["name"] == "Lookalikes"
    assert {(a["entity_id"], a["name"], a["status"]) for a in adset["ads"]} == {
        ("ad-1", "Red shoes video", "PAUSED"), ("ad-2", "ad-2", None), ("ad-new", "Not delivered yet", "ACTIVE")}
    assert "B secret name" not in str(camps)


def test_page_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "new EventSource(" in js.text and "/stream/token" in js.text
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in ("/dashboard", "/entities", "/analytics/timeseries", "/stream/token"):
        ops = spec["paths"][path]
        assert all(op.get("security") == [{"HTTPBearer": []}] for op in ops.values()), path
    assert spec["paths"]["/stream"]["get"]["security"] == [{"HTTPBearer": []}, {"StreamToken": []},
                                                           {"StreamCookie": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_a_commit_between_two_loads_shows_at_once(client: TestClient, issuer: Issuer, tenants: Tenants,
                                                 populated: str) -> None:
    """Figures are reused only while nothing was committed: a new snapshot shows in the
    very next load, for the same timeframe and parameters."""
    before = get(client, issuer, tenants, "/dashboard", timeframe="last_30_days")
    assert get(client, issuer, tenants, "/dashboard", timeframe="last_30_days") == before
    write(populated, [snapshot(tenants.ws_a, provider="meta", campaign="cmp-new", ad="ad-new", day=today_utc(),
                               captured_at=now_minus(1), spend="1.25", impressions=10, clicks=1)])
    after = get(client, issuer, tenants, "/dashboard", timeframe="last_30_days")
    assert D(after["kpis"]["spend"]["value"]) == D(before["kpis"]["spend"]["value"]) + D("1.25")
    assert "cmp-new" in {c["campaign_id"] for c in after["top_campaigns"]}


def test_without_a_free_side_connection_the_answer_is_the_same(client: TestClient, issuer: Issuer,
                                                              tenants: Tenants, populated: str) -> None:
    """With every side-read slot taken, the dashboard reads on its own connection, in
    turn, and answers the same (never waits for a connection it might itself hold)."""
    side = services_of(client.app).dashboard
    expected = {tf: get(client, issuer, tenants, "/dashboard", timeframe=tf) for tf in ("today", "last_30_days")}
    taken = 0
    while side.slots.acquire(blocking=False):
        taken += 1
    try:
        assert taken == side.side_connections
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("CREATE TABLE tick (n int)")  # moves the WAL: no reuse of figures
        for tf, body in expected.items():
            assert get(client, issuer, tenants, "/dashboard", timeframe=tf) == body
    finally:
        for _ in range(taken):
            side.slots.release()


TOP_SQL = (f"SELECT provider, account_id, campaign_id, {SUMS_SQL} FROM metrics_daily WHERE workspace_id = %(ws)s "
           "AND currency = 'USD' AND report_date BETWEEN %(s)s AND %(e)s GROUP BY 1, 2, 3 "
           'ORDER BY spend DESC, provider COLLATE "C", account_id COLLATE "C", campaign_id COLLATE "C"')


def top_of(body: dict[str, Any]) -> list[tuple[str, Decimal, int]]:
    return [(r["campaign_id"], D(r["spend"]), r["impressions"]) for r in body["top_campaigns"]]


def top_expected(url: str, t: Tenants, start: date, end: date) -> list[tuple[str, Decimal, int]]:
    return [(r["campaign_id"], r["spend"], r["impressions"])
            for r in analyst(url, TOP_SQL, ws=t.ws_a, s=start, e=end)][:10]


def test_settled_days_are_reused_until_one_of_them_changes(client: TestClient, issuer: Issuer, tenants: Tenants,
                                                           populated: str) -> None:
    """last_30_days reads each account's settled days once: a commit of today's numbers
    shows at once, re-reading only that account's hot days; a restatement of a settled
    day shows at once too, even one that leaves the account's sums unchanged (two
    campaigns swap figures), re-reading only that account's settled days."""
    cache = services_of(client.app).dashboard.campaigns
    assert cache is not None
    start, end = days_ago(29), today_utc()
    # A second campaign on the settled day of cmp-g (days_ago(10)), in the same account.
    write(populated, [snapshot(tenants.ws_a, provider="google", account="cus-9", campaign="cmp-h", ad="h-1",
                               day=days_ago(10), captured_at=utc(days_ago(10), 13), spend="20", impressions=2000,
                               clicks=20, conversions="1", revenue="40")])
    first = get(client, issuer, tenants, "/dashboard", timeframe="last_30_days")
    assert top_of(first) == top_expected(populated, tenants, start, end)
    misses, hits = cache.misses, cache.hits

    write(populated, [snapshot(tenants.ws_a, provider="meta", campaign="cmp-new", ad="ad-new", day=today_utc(),
                               captured_at=now_minus(1), spend="500", impressions=10, clicks=1)])
    second = get(client, issuer, tenants, "/dashboard", timeframe="last_30_days")
    # Read again: act-1's hot days; reused: cus-9's settled and hot days.
    assert (cache.misses - misses, cache.hits - hits) == (1, 2)
    assert top_of(second)[0] == ("cmp-new", D("500"), 10)
    assert top_of(second) == top_expected(populated, tenants, start, end)

    # The restatement loop swaps the two campaigns' figures on the settled day: the
    # account-day's sums stay the same, its rows' version does not.
    account_day = ("SELECT spend, impressions, clicks, conversions, revenue FROM metrics_account_daily "
                   "WHERE workspace_id = %(ws)s AND account_id = 'cus-9' AND report_date = %(d)s")
    before = analyst(populated, account_day, ws=tenants.ws_a, d=days_ago(10))
    write(populated, [
        snapshot(tenants.ws_a, provider="google", account="cus-9", campaign="cmp-g", ad="g-1", day=days_ago(10),
                 captured_at=utc(days_ago(1), 3), spend="20", impressions=2000, clicks=20, conversions="1",
                 revenue="40"),
        snapshot(tenants.ws_a, provider="google", account="cus-9", campaign="cmp-h", ad="h-1", day=days_ago(10),
                 captured_at=utc(days_ago(1), 3), spend="33.3", impressions=3000, clicks=30, conversions="1",
                 revenue="99.9"),
    ])
    assert analyst(populated, account_day, ws=tenants.ws_a, d=days_ago(10)) == before
    third = get(client, issuer, tenants, "/dashboard", timeframe="last_30_days")
    # Read again: cus-9's settled days; reused: both accounts' hot days.
    assert (cache.misses - misses, cache.hits - hits) == (2, 4)
    assert top_of(third) == top_expected(populated, tenants, start, end)
    assert top_of(third) != top_of(second)


def test_a_settled_range_ranks_like_the_analyst_query(client: TestClient, issuer: Issuer, tenants: Tenants,
                                                      populated: str) -> None:
    """A custom range with no hot day is all settled days; one with both, merged."""
    for start, end in ((days_ago(12), days_ago(2)), (days_ago(12), today_utc()), (days_ago(3), days_ago(1))):
        body = get(client, issuer, tenants, "/dashboard", **{"from": start.isoformat(), "to": end.isoformat()})
        assert top_of(body) == top_expected(populated, tenants, start, end), (start, end)
        assert top_of(body), (start, end)
