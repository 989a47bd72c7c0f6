"""Hostile input at the HTTP edge gets a clear 4xx, never a 500, a database error or a
silent acceptance: NUL characters in any text, non-finite JSON numbers, dates outside
the supported range, oversized bodies (refused before any route or auth runs), a
``Last-Event-ID`` beyond 64 bits, and stream tokens kept out of the access log."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute

from serving.json_route import EdgeRoute
from tests.serving.conftest import Issuer, Server, Tenants
from tests.serving.stoploss_fixtures import Api, api, rules_topic  # noqa: F401
from tests.serving.test_rules_api import RULE

pytestmark = pytest.mark.services
NUL = "\x00"


def _no_rows(a: Api, table: str) -> None:
    with psycopg.connect(a.database) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row == (0,)


@pytest.mark.parametrize("param", ["provider", "account_id", "campaign_id"])
def test_nul_in_a_query_filter_is_422(api: Api, param: str) -> None:  # noqa: F811
    r = api.alice("GET", "/analytics/timeseries", metric="spend", **{param: f"act{NUL}1"})
    assert r.status_code == 422, r.text
    assert "NUL" in r.text


@pytest.mark.parametrize(("path", "body"), [
    ("/rules", {**RULE, "name": f"burn{NUL}"}),
    ("/rules", {**RULE, "scope": {"level": "ad", "name_contains": f"shoe{NUL}s"}}),
    ("/rules/dry-run", {**RULE, "scope": {"level": "ad", "name_contains": NUL}}),
    ("/channels", {"kind": "slack", "name": f"#a{NUL}", "webhook_url": "https://hooks.slack.com/services/T/B/x"}),
    ("/channels", {"kind": "slack", "name": "a", "webhook_url": f"https://hooks.slack.com/services/T/B/x{NUL}"}),
    ("/channels", {"kind": "email", "name": f"b{NUL}", "recipients": ["ana@shop.example"]}),
])
def test_nul_in_a_body_text_is_422(api: Api, path: str, body: dict[str, Any]) -> None:  # noqa: F811
    r = api.alice("POST", path, body)
    assert r.status_code == 422, r.text
    assert "NUL" in r.text
    _no_rows(api, "rules")
    _no_rows(api, "channels")


def _post_rule_text(a: Api, text: str) -> Any:
    return a.client.post("/rules", params={"workspace_id": str(a.tenants.ws_a)}, content=text,
                         headers={**a.alice.headers, "Content-Type": "application/json"})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_numbers_are_422(api: Api, literal: str) -> None:  # noqa: F811
    """Python's JSON reader takes NaN/Infinity; the API does not: the body is refused as
    malformed JSON with a message naming the problem (before: the 422 that echoed the
    NaN back could not be serialised, a 500)."""
    text = json.dumps(RULE).replace('"value": "80"', f'"value": {literal}')
    assert literal in text
    r = _post_rule_text(api, text)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["type"] == "json_invalid" and "finite" in json.dumps(detail)
    _no_rows(api, "rules")


@pytest.mark.parametrize("literal", ["1e999", "-1e400", "1e-999"])
def test_extreme_json_numbers_are_exact_and_bounded(api: Api, literal: str) -> None:  # noqa: F811
    """Read as exact decimals (1e999 is not infinity), then held to the field's bounds."""
    r = _post_rule_text(api, json.dumps(RULE).replace('"value": "80"', f'"value": {literal}'))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["body", "conditions"]
    _no_rows(api, "rules")


def test_huge_json_integers_are_422(api: Api) -> None:  # noqa: F811
    text = json.dumps({**RULE, "guards": {"min_impressions": 1}}).replace('"min_impressions": 1',
                                                                         '"min_impressions": ' + "9" * 5000)
    r = _post_rule_text(api, text)
    assert r.status_code == 422, r.text[:300]
    assert r.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(("path", "params"), [
    ("/dashboard", {"from": "0001-01-01", "to": "0001-01-01"}),
    ("/dashboard", {"from": "9999-12-31", "to": "9999-12-31"}),
    ("/dashboard", {"from": "1999-12-31", "to": "2000-01-02"}),
    ("/analytics/timeseries", {"metric": "spend", "from": "0001-01-01", "to": "0001-01-02"}),
    ("/analytics/timeseries", {"metric": "spend", "from": "9999-12-30", "to": "9999-12-31"}),
    ("/alerts", {"since": "0001-01-01T00:00:00Z"}),
    ("/alerts/actions", {"since": "9999-12-31T23:59:59-05:00"}),
])
def test_dates_outside_the_supported_range_are_422(api: Api, path: str, params: dict[str, str]) -> None:  # noqa: F811
    r = api.alice("GET", path, **params)
    assert r.status_code == 422, r.text
    assert "2000-01-01" in r.text and "2099-12-31" in r.text


def test_dates_at_the_bounds_are_accepted(api: Api) -> None:  # noqa: F811
    """The bound is inclusive at both ends: the previous period of a range starting at
    the lower bound still computes (it lies before it, and finds nothing)."""
    r = api.alice("GET", "/dashboard", **{"from": "2000-01-01", "to": "2000-01-01"})
    assert r.status_code == 200, r.text
    assert r.json()["previous_period"] == {"start": "1999-12-31", "end": "1999-12-31"}
    r = api.alice("GET", "/dashboard", **{"from": "2099-12-31", "to": "2099-12-31"})
    assert r.status_code == 200, r.text


# ---- request bodies are bounded before any route (or auth) runs ------------------------


def test_oversized_body_without_a_token_is_413_not_read(api: Api) -> None:  # noqa: F811
    """Before: the whole body was read and parsed, then a 401."""
    big = b'{"name": "' + b"x" * (1 << 20) + b'"}'
    r = api.client.post("/rules", params={"workspace_id": str(api.tenants.ws_a)}, content=big,
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text[:300]
    assert "64 KiB" in r.json()["detail"] or "65536" in r.json()["detail"]


def test_oversized_chunked_body_is_413(api: Api) -> None:  # noqa: F811
    """No Content-Length (chunked): the middleware counts what arrives (how much it
    reads is tested at the ASGI level in test_body_limit)."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(200):
            yield b"x" * 4096
        yield b'"}'

    r = api.client.post("/rules", params={"workspace_id": str(api.tenants.ws_a)}, content=chunks(),
                        headers={**api.alice.headers, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text[:300]
    _no_rows(api, "rules")


def test_body_under_the_limit_is_served(api: Api) -> None:  # noqa: F811
    r = api.alice("POST", "/rules", RULE)
    assert r.status_code == 201, r.text


# ---- the stream: Last-Event-ID range, tokens out of the access log ---------------------


def _stream_token(base: str, issuer: Issuer, t: Tenants) -> str:
    r = httpx.post(f"{base}/stream/token", params={"workspace_id": str(t.ws_a)},
                   headers={"Authorization": f"Bearer {issuer.token(t.alice)}"})
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


@pytest.mark.parametrize("last_id", ["18446744073709551616-0", "0-18446744073709551616", "99999999999999999999-1"])
def test_last_event_id_beyond_64_bits_is_422(server: Server, issuer: Issuer, tenants: Tenants, last_id: str) -> None:
    """Before: accepted, then Redis refused the id inside the stream and the connection
    was cut without an event."""
    token = _stream_token(server.base, issuer, tenants)
    for how in ("header", "query"):
        params = {"workspace_id": str(tenants.ws_a), "token": token}
        headers = {}
        if how == "header":
            headers["Last-Event-ID"] = last_id
        else:
            params["last_event_id"] = last_id
        r = httpx.get(f"{server.base}/stream", params=params, headers=headers, timeout=10)
        assert r.status_code == 422, (how, r.text)
        assert "Last-Event-ID" in r.text


def test_largest_64_bit_last_event_id_is_served(server: Server, issuer: Issuer, tenants: Tenants) -> None:
    token = _stream_token(server.base, issuer, tenants)
    with httpx.stream("GET", f"{server.base}/stream", params={"workspace_id": str(tenants.ws_a), "token": token},
                      headers={"Last-Event-ID": "18446744073709551615-18446744073709551615"}, timeout=10) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event:"):
                assert line.split(":", 1)[1].strip() == "ready"
                break


class _Seen(logging.Handler):
    """Collects the access-log lines that contain ``marker``; ``found`` is set at the first."""

    def __init__(self, marker: str) -> None:
        super().__init__(logging.INFO)
        self.marker, self.lines, self.found = marker, list[str](), threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if self.marker in line:
            self.lines.append(line)
            self.found.set()


def test_stream_tokens_never_reach_the_access_log(server: Server, issuer: Issuer, tenants: Tenants) -> None:
    token = _stream_token(server.base, issuer, tenants)
    marker = uuid.uuid4().hex
    seen = _Seen(marker)
    access = logging.getLogger("uvicorn.access")
    level = access.level
    access.setLevel(logging.INFO)
    access.addHandler(seen)
    try:
        for params in ({"token": token, "last_event_id": "x"}, {"token": token}):
            with httpx.stream("GET", f"{server.base}/stream", timeout=10,
                              params={"workspace_id": str(tenants.ws_a), "marker": marker, **params}) as r:
                assert r.status_code in (200, 422)
        assert seen.found.wait(10), "no access log line for the request"
    finally:
        access.removeHandler(seen)
        access.setLevel(level)
    assert seen.lines
    for line in seen.lines:
        assert token not in line and "token=" in line and str(tenants.ws_a) in line


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        inner = getattr(r, "original_router", None)  # FastAPI keeps an included router whole
        if inner is not None:
            yield from _api_routes(inner.routes)


def test_every_route_with_a_body_reads_json_under_the_number_policy(api: Api) -> None:  # noqa: F811
    """Routers are built with ``api_router``: a route added with a plain APIRouter would
    read NaN again."""
    routes = list(_api_routes(api.client.app.routes))  # type: ignore[attr-defined]
    with_body = [r for r in routes if r.body_field is not None]
    assert len(routes) > 20 and len(with_body) >= 4
    assert [r.path for r in with_body if not isinstance(r, EdgeRoute)] == []
