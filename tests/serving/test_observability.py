"""The server's /metrics (request latency by route template, stream clients) and its
answer when the database connections it pooled were cut (a PostgreSQL restart): a 503
to retry, then normal service, never a 500."""

from __future__ import annotations

import uuid

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.conftest import Issuer, Server, Tenants
from tests.serving.test_stream import Sse, open_stream, stream_token

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> Samples:
    r = httpx.get(f"{base}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def requests(m: Samples, route: str, status: str, method: str = "GET") -> float:
    key = ("metricx_http_request_duration_seconds_count",
           frozenset({("route", route), ("method", method), ("status", status)}))
    return m.get(key, 0.0)


def test_requests_are_counted_by_route_template_and_stream_clients_gauged(
    server: Server, issuer: Issuer, tenants: Tenants
) -> None:
    auth = {"Authorization": f"Bearer {issuer.token(tenants.alice)}"}
    before = scrape(server.base)
    assert httpx.get(f"{server.base}/dashboard", params={"workspace_id": str(tenants.ws_a)},
                     headers=auth).status_code == 200
    for _ in range(2):  # two ids, one route
        r = httpx.get(f"{server.base}/rules/{uuid.uuid4()}", params={"workspace_id": str(tenants.ws_a)}, headers=auth)
        assert r.status_code == 404
    assert httpx.get(f"{server.base}/no/such/{uuid.uuid4()}").status_code == 404
    after = scrape(server.base)
    assert requests(after, "/dashboard", "200") - requests(before, "/dashboard", "200") == 1
    assert requests(after, "/rules/{rule_id}", "404") - requests(before, "/rules/{rule_id}", "404") == 2
    assert requests(after, "unmatched", "404") - requests(before, "unmatched", "404") == 1
    assert not any("no/such" in dict(ls).get("route", "") for _, ls in after)  # no raw paths as labels

    clients: tuple[str, frozenset[tuple[str, str]]] = ("metricx_sse_clients", frozenset())
    idle = after[clients]
    with open_stream(server.base, stream_token(server.base, issuer, tenants), tenants) as r:
        sse = Sse(r)  # kept: a dropped reader closes the connection
        sse.next_event("ready")
        assert scrape(server.base)[clients] == idle + 1
    assert requests(scrape(server.base), "/stream", "200") >= 1


def test_cut_database_connections_give_one_503_then_service(
    server: Server, issuer: Issuer, tenants: Tenants, database: str
) -> None:
    auth = {"Authorization": f"Bearer {issuer.token(tenants.alice)}"}

    def dashboard() -> httpx.Response:
        return httpx.get(f"{server.base}/dashboard", params={"workspace_id": str(tenants.ws_a)}, headers=auth)

    assert dashboard().status_code == 200  # the pool now holds an idle connection
    name = database.rsplit("/", 1)[1]
    with psycopg.connect(database, autocommit=True) as admin:
        cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()
    assert cut is not None and cut[0] >= 1
    first = dashboard()
    assert first.status_code == 503 and first.headers["retry-after"], first.text
    assert dashboard().status_code == 200
