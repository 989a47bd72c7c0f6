"""/stream over a real uvicorn server and the real Redis: live updates published by the
pipeline's own publisher (``adapters.redis_live.LivePublisher``), coalescing, resume
with Last-Event-ID, heartbeats, the slow-client drop and workspace isolation."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import redis

from adapters.redis_live import LivePublisher, live_stream_key
from ground.settings import Settings
from tests.serving.conftest import Issuer, Server, Tenants
from tests.serving.stoploss_fixtures import VICTOR, add_member


@pytest.fixture
def publisher(services: Settings, tenants: Tenants) -> Iterator[LivePublisher]:
    p = LivePublisher(services.redis.url)
    yield p
    p.close()
    r = redis.Redis.from_url(services.redis.url)
    r.delete(live_stream_key(str(tenants.ws_a)), live_stream_key(str(tenants.ws_b)))
    r.close()


class Sse:
    """A minimal EventSource: parses ``event``/``id``/``data`` blocks and comments."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()
        self.comments = 0

    def next(self) -> dict[str, Any]:
        ev: dict[str, Any] = {}
        for line in self.lines:
            if line == "":
                if "event" in ev or "data" in ev:
                    return ev
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            ev[name] = value.lstrip(" ")
        raise EOFError("stream ended")

    def next_event(self, kind: str) -> dict[str, Any]:
        while True:
            ev = self.next()
            if ev.get("event") == kind:
                return ev


def change(spend: str, clicks: int, bucket: str = "2026-03-29T10:00:00Z") -> dict[str, Any]:
    return {"provider": "meta", "account_id": "act-1", "currency": "USD", "report_date": "2026-03-29",
            "bucket_start": bucket, "spend": spend, "impressions": clicks * 10, "clicks": clicks,
            "conversions": "0", "revenue": "0"}


def publish(p: LivePublisher, ws: uuid.UUID, *changes: dict[str, Any]) -> None:
    p.publish({str(ws): {"schema": "metricx.live.v1", "workspace_id": str(ws),
                         "committed_at": "2026-03-29T10:00:01Z", "changes": list(changes)}})


def stream_token(base: str, issuer: Issuer, t: Tenants, ws: uuid.UUID | None = None) -> str:
    r = httpx.post(f"{base}/stream/token", params={"workspace_id": str(ws or t.ws_a)},
                   headers={"Authorization": f"Bearer {issuer.token(t.alice)}"})
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


def open_stream(base: str, token: str, t: Tenants, last_event_id: str | None = None) -> Any:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    return httpx.stream("GET", f"{base}/stream", params={"workspace_id": str(t.ws_a), "token": token},
                        headers=headers, timeout=httpx.Timeout(20.0))


def collect_updates(sse: Sse, entries: int) -> tuple[list[dict[str, Any]], str]:
    """Read update events until they cover ``entries`` stream entries."""
    seen, out, last = 0, [], ""
    while seen < entries:
        ev = sse.next_event("update")
        data = json.loads(ev["data"])
        seen += data["entries"]
        out.extend(data["changes"])
        last = ev["id"]
    assert seen == entries
    return out, last


def test_live_updates_reach_the_client_and_only_its_workspace(server: Server, issuer: Issuer, tenants: Tenants,
                                                              publisher: LivePublisher) -> None:
    with open_stream(server.base, stream_token(server.base, issuer, tenants), tenants) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        sse = Sse(r)
        ready = sse.next_event("ready")
        assert json.loads(ready["data"])["resumed"] is False
        publish(publisher, tenants.ws_b, change("777", 7))  # someone else's
        publish(publisher, tenants.ws_a, change("1.25", 1))
        publish(publisher, tenants.ws_a, change("2.50", 2), change("4", 4, "2026-03-29T10:15:00Z"))
        publish(publisher, tenants.ws_a, change("-0.75", 0))  # a correction
        changes, _ = collect_updates(sse, 3)
    per_bucket: dict[str, tuple[Decimal, int]] = {}
    for c in changes:
        s, k = per_bucket.get(c["bucket_start"], (Decimal(0), 0))
        per_bucket[c["bucket_start"]] = (s + Decimal(c["spend"]), k + c["clicks"])
    assert per_bucket == {"2026-03-29T10:00:00Z": (Decimal("3.00"), 3), "2026-03-29T10:15:00Z": (Decimal("4"), 4)}


def test_resume_with_last_event_id_misses_nothing(server: Server, issuer: Issuer, tenants: Tenants,
                                                  publisher: LivePublisher) -> None:
    token = stream_token(server.base, issuer, tenants)
    with open_stream(server.base, token, tenants) as r:
        sse = Sse(r)
        sse.next_event("ready")
        publish(publisher, tenants.ws_a, change("1", 1))
        _, last = collect_updates(sse, 1)
    # disconnected: these are published while nobody listens
    publish(publisher, tenants.ws_a, change("10", 10))
    publish(publisher, tenants.ws_a, change("20", 20))
    with open_stream(server.base, token, tenants, last_event_id=last) as r:
        sse = Sse(r)
        changes, _ = collect_updates(sse, 2)
        publish(publisher, tenants.ws_a, change("40", 40))
        after, _ = collect_updates(sse, 1)
    assert sum(Decimal(c["spend"]) for c in changes) == Decimal("30")
    assert [c["clicks"] for c in after] == [40]


def test_trimmed_history_asks_for_a_reload(server: Server, issuer: Issuer, tenants: Tenants,
                                           services: Settings, publisher: LivePublisher) -> None:
    publish(publisher, tenants.ws_a, change("1", 1))
    r0 = redis.Redis.from_url(services.redis.url)
    entries: Any = r0.xrange(live_stream_key(str(tenants.ws_a)))
    first = entries[0][0].decode()
    publish(publisher, tenants.ws_a, change("2", 2))
    before: Any = r0.xrange(live_stream_key(str(tenants.ws_a)))
    ids = [e[0].decode() for e in before]
    assert ids[0] == first and len(ids) == 2
    r0.xtrim(live_stream_key(str(tenants.ws_a)), maxlen=1, approximate=False)
    after: Any = r0.xrange(live_stream_key(str(tenants.ws_a)))
    kept = [e[0].decode() for e in after]
    r0.close()
    assert kept == ids[1:]  # trimmed: the first entry after "1-0" is gone, so the resume has a gap
    with open_stream(server.base, stream_token(server.base, issuer, tenants), tenants, last_event_id="1-0") as r:
        sse = Sse(r)
        assert sse.next()["event"] == "reset"
        changes, _ = collect_updates(sse, 1)
    assert [c["clicks"] for c in changes] == [2]


def test_bad_last_event_id_is_422(server: Server, issuer: Issuer, tenants: Tenants) -> None:
    r = httpx.get(f"{server.base}/stream", params={"workspace_id": str(tenants.ws_a),
                                                   "token": stream_token(server.base, issuer, tenants)},
                  headers={"Last-Event-ID": "$"})
    assert r.status_code == 422 and "Last-Event-ID" in r.text


def test_cookie_auth_and_heartbeats(make_server: Any, issuer: Issuer, tenants: Tenants) -> None:
    srv: Server = make_server(sse_heartbeat_s=0.2)
    with httpx.Client(base_url=srv.base, timeout=20) as c:
        r = c.post("/stream/token", params={"workspace_id": str(tenants.ws_a)},
                   headers={"Authorization": f"Bearer {issuer.token(tenants.alice)}"})
        assert r.status_code == 200
        with c.stream("GET", "/stream", params={"workspace_id": str(tenants.ws_a)}) as s:  # cookie only
            assert s.status_code == 200
            sse = Sse(s)
            sse.next_event("ready")
            hb = sse.next()
            assert hb["event"] == "heartbeat" and "id" not in hb


def test_slow_client_is_dropped_with_an_event(make_server: Any, issuer: Issuer, tenants: Tenants,
                                              publisher: LivePublisher) -> None:
    """Queue of 4 and one event per minute: a burst of 20 entries overflows the queue,
    the client is unsubscribed and told so (instead of buffering without bound)."""
    srv: Server = make_server(sse_queue_size=4, sse_coalesce_ms=60_000)
    with open_stream(srv.base, stream_token(srv.base, issuer, tenants), tenants) as r:
        sse = Sse(r)
        sse.next_event("ready")
        publish(publisher, tenants.ws_a, change("1", 1))
        collect_updates(sse, 1)
        for i in range(20):
            publish(publisher, tenants.ws_a, change("1", i))
        ev = sse.next()
        assert ev["event"] == "dropped"
        assert "too slow" in json.loads(ev["data"])["reason"]
        with pytest.raises(EOFError):
            sse.next()


# ---- a stream ends when its authority does ---------------------------------------------

class Shift:
    """Wall time plus an offset the test moves (the app's injected clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def until_end(sse: Sse) -> dict[str, Any]:
    """The next event that is not a heartbeat; the stream must close right after it."""
    while True:
        ev = sse.next()
        if ev.get("event") != "heartbeat":
            break
    with pytest.raises(EOFError):
        sse.next()
    return ev


@pytest.mark.parametrize("credential", ["stream token", "bearer token"])
def test_stream_ends_when_its_token_expires(make_server: Any, issuer: Issuer, tenants: Tenants,
                                            publisher: LivePublisher, credential: str) -> None:
    """Before: a stream opened just before its token's exp lived on.  The clock is moved
    past the expiry (a stream token's exp; a bearer's exp plus the accepted skew)."""
    clock = Shift()
    srv: Server = make_server(clock=clock, sse_recheck_s=0.05, sse_heartbeat_s=3600)
    params = {"workspace_id": str(tenants.ws_a)}
    headers: dict[str, str] = {}
    if credential == "stream token":
        params["token"] = stream_token(srv.base, issuer, tenants)
        exp = jwt.decode(params["token"], options={"verify_signature": False})["exp"]
        lasts = exp - time.time()
    else:
        headers["Authorization"] = f"Bearer {issuer.token(tenants.alice, exp=int(time.time()) + 600)}"
        lasts = 600 + 30  # METRICX_AUTH_LEEWAY_S
    with httpx.stream("GET", f"{srv.base}/stream", params=params, headers=headers, timeout=20) as r:
        assert r.status_code == 200
        sse = Sse(r)
        sse.next_event("ready")
        clock.offset = lasts - 5  # not yet: the stream still delivers
        publish(publisher, tenants.ws_a, change("1", 1))
        _, last = collect_updates(sse, 1)
        clock.offset = lasts + 1
        ev = until_end(sse)
    assert ev["event"] == "expired" and "id" not in ev
    data = json.loads(ev["data"])
    assert "expired" in data["reason"] and data["last_event_id"] == last


def test_stream_ends_once_its_user_is_removed(make_server: Any, issuer: Issuer, tenants: Tenants,
                                              publisher: LivePublisher, services: Settings) -> None:
    """Before: a member removed from the workspace kept receiving its live stream.  Other
    members' streams of the same workspace go on."""
    srv: Server = make_server(sse_recheck_s=0.05, sse_heartbeat_s=3600)
    db = srv.settings.database.libpq_url
    add_member(db, VICTOR, tenants.ws_a, "viewer")
    victor = httpx.post(f"{srv.base}/stream/token", params={"workspace_id": str(tenants.ws_a)},
                        headers={"Authorization": f"Bearer {issuer.token(VICTOR)}"}).json()["token"]
    with open_stream(srv.base, stream_token(srv.base, issuer, tenants), tenants) as ra, \
            open_stream(srv.base, victor, tenants) as rv:
        alice, other = Sse(ra), Sse(rv)
        alice.next_event("ready")
        other.next_event("ready")
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("DELETE FROM memberships m USING users u WHERE u.id = m.user_id AND u.sub = %s "
                         "AND m.workspace_id = %s", (tenants.alice, tenants.ws_a))
        ev = until_end(alice)
        assert ev["event"] == "revoked" and "no longer a member" in json.loads(ev["data"])["reason"]
        publish(publisher, tenants.ws_a, change("2", 2))
        changes, _ = collect_updates(other, 1)
    assert [c["clicks"] for c in changes] == [2]
    # ... and the removed member cannot open a new one.
    r = httpx.post(f"{srv.base}/stream/token", params={"workspace_id": str(tenants.ws_a)},
                   headers={"Authorization": f"Bearer {issuer.token(tenants.alice)}"})
    assert r.status_code == 403


def test_stream_token_never_outlives_its_bearer(server: Server, issuer: Issuer, tenants: Tenants) -> None:
    bearer_exp = int(time.time()) + 20  # shorter than METRICX_STREAM_TOKEN_TTL_S (120)
    r = httpx.post(f"{server.base}/stream/token", params={"workspace_id": str(tenants.ws_a)},
                   headers={"Authorization": f"Bearer {issuer.token(tenants.alice, exp=bearer_exp)}"})
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert claims["exp"] == bearer_exp
    assert 0 < r.json()["expires_in"] <= 20
