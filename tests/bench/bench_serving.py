"""Serving figures, printed (never asserted): ``python -m tests.bench.bench_serving``.

1. ``GET /dashboard?timeframe=last_30_days`` (and ``today``) against 90 days of
   ``metrics_daily`` for 1,000 campaigns / 20,000 ads (plus a whole day of 15-minute rows for today),
   through a real ``metricx serve``-equivalent uvicorn process: p50/p99 latency with
   nothing committing, with a poll of today committed before each load (live), and
   with a restatement of a settled day committed before each load.
2. ``GET /stream`` with N concurrent SSE clients (default 1,000) while live updates are
   XADDed at a steady rate by the pipeline's own publisher: delivery latency (XADD ->
   event parsed by the client) p50/p99, events lost, server RSS.

The bench data is generated with set-based SQL (it measures reads, not ingestion).  The
dashboard figures are measured on TimescaleDB and on plain PostgreSQL in the same run
(``tests.bench.flavours``); the SSE figures once (they involve Redis, not the tables).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from adapters.redis_live import LivePublisher, live_stream_key
from adapters.timescale import InsightStore
from domain.batch import build_batch
from domain.deltas import EntityState, apply_snapshot
from ground.settings import REPO_ROOT, load_settings
from schemas.envelope import Envelope
from schemas.insight import Snapshot
from schemas.metrics import Metrics
from serving.dev_issuer import load_or_create_key, mint
from tests import databases
from tests.bench import flavours as fl

FILL = """
INSERT INTO metrics_daily (workspace_id, provider, account_id, entity_level, entity_id, campaign_id, adset_id,
                           report_date, timezone, currency, spend, impressions, clicks, conversions, revenue,
                           last_captured_at)
SELECT %(ws)s, CASE WHEN c %% 3 = 0 THEN 'google' ELSE 'meta' END, 'act-' || (c %% 10), 'ad',
       'ad-' || a, 'cmp-' || c, 'set-' || (a / 5), d::date, 'UTC', 'USD',
       round((random() * 50)::numeric, 2), (random() * 5000)::int, (random() * 100)::int,
       round((random() * 3)::numeric, 2), round((random() * 150)::numeric, 2), now()
FROM generate_series(0, %(ads)s - 1) a, LATERAL (SELECT a %% %(campaigns)s AS c) cc,
     generate_series(current_date - (%(days)s - 1), current_date, interval '1 day') d
"""
# What the pipeline's commit keeps in metrics_campaign_daily (adapters.timescale
# CAMPAIGN_DAILY), computed here in one pass: the dashboard reads it.  Stored in date
# order, as the pipeline stores it (a day's rows are created during that day).
FILL_CAMPAIGN = """
INSERT INTO metrics_campaign_daily (workspace_id, provider, account_id, campaign_id, report_date, currency, timezone,
                                    spend, impressions, clicks, conversions, revenue)
SELECT workspace_id, provider, account_id, campaign_id, report_date, currency, min(timezone), sum(spend),
       sum(impressions), sum(clicks), sum(conversions), sum(revenue)
FROM metrics_daily WHERE workspace_id = %(ws)s GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY report_date
"""
# And what it keeps in metrics_account_daily (ACCOUNT_DAILY), from the campaign-days.
FILL_ACCOUNT = """
INSERT INTO metrics_account_daily (workspace_id, provider, account_id, report_date, currency, timezone,
                                   spend, impressions, clicks, conversions, revenue)
SELECT workspace_id, provider, account_id, report_date, currency, min(timezone), sum(spend),
       sum(impressions), sum(clicks), sum(conversions), sum(revenue)
FROM metrics_campaign_daily WHERE workspace_id = %(ws)s GROUP BY 1, 2, 3, 4, 5 ORDER BY report_date
"""
FILL_15M = """
INSERT INTO metrics_15m (workspace_id, provider, account_id, entity_level, entity_id, campaign_id, adset_id,
                         report_date, currency, bucket_start, spend, impressions, clicks, conversions, revenue,
                         last_captured_at)
SELECT workspace_id, provider, account_id, entity_level, entity_id, campaign_id, adset_id, report_date, currency,
       b, spend / 8, impressions / 8, clicks / 8, conversions / 8, revenue / 8, now()
FROM metrics_daily, generate_series(date_trunc('day', now()), date_trunc('day', now()) + interval '1425 minutes',
                                    interval '15 minutes') b
WHERE workspace_id = %(ws)s AND report_date = current_date
"""
# And what it keeps in metrics_account_15m (ACCOUNT_15M_*), from the ad buckets.
FILL_ACCOUNT_15M = """
INSERT INTO metrics_account_15m (workspace_id, provider, account_id, report_date, currency, bucket_start,
                                 spend, impressions, clicks, conversions, revenue, ad_rows)
SELECT workspace_id, provider, account_id, report_date, currency, bucket_start, sum(spend), sum(impressions),
       sum(clicks), sum(conversions), sum(revenue), count(*)
FROM metrics_15m WHERE workspace_id = %(ws)s GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY report_date
"""


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


@contextlib.contextmanager
def bench_database(flavour: str) -> Iterator[str]:
    with databases.fresh_database(load_settings().database.libpq_url, fl.mode(flavour)) as url:
        yield url


@contextlib.contextmanager
def server(url: str, dev_dir: Path, port: int, extra_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "METRICX_DATABASE_URL": url, "METRICX_DEV_ISSUER": "1",
           "METRICX_DEV_ISSUER_DIR": str(dev_dir), "METRICX_LOG_LEVEL": "WARNING", **extra_env}
    p = subprocess.Popen([sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory",
                          "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
                         env=env, cwd=REPO_ROOT)
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        yield p
    finally:
        p.terminate()
        p.wait(timeout=30)


def setup_tenant(url: str) -> uuid.UUID:
    ws = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO workspaces (id, name, timezone) VALUES (%s, 'Bench', 'UTC')", (ws,))
        uid = conn.execute("INSERT INTO users (sub) VALUES ('bench') RETURNING id").fetchone()
        assert uid is not None
        conn.execute("INSERT INTO memberships VALUES (%s, %s, 'owner')", (uid[0], ws))
    return ws


class Poller:
    """Commits what the pipeline commits when one campaign's poll arrives: 20 ads'
    cumulative snapshots through the real delta logic and the real writer
    (InsightStore), for today (the hot loop) or for a settled day (the restatement
    loop)."""

    def __init__(self, url: str, ws: uuid.UUID, campaigns: int) -> None:
        self.store = InsightStore(url, consumer="bench")
        self.ws, self.campaigns = str(ws), campaigns
        self.states: dict[tuple[str, date], EntityState] = {}
        self.n = 0

    def commit(self, day: date) -> None:
        self.n += 1
        c = self.n % self.campaigns
        now = datetime.now(UTC)
        items: list[Any] = []
        for a in range(c, c + 20 * self.campaigns, self.campaigns):  # the bench's ads of campaign c
            key = (f"ad-{a}", day)
            base = Decimal(60 + self.n)  # above anything FILL wrote: a real increase
            snap = Snapshot(
                workspace_id=self.ws, provider="google" if c % 3 == 0 else "meta", account_id=f"act-{c % 10}",
                entity_level="ad", entity_id=f"ad-{a}", campaign_id=f"cmp-{c}", adset_id=f"set-{a // 5}",
                report_date=day, timezone="UTC", currency="USD", captured_at=now,
                metrics=Metrics(base, 6000 + self.n, 120 + self.n, Decimal(4), base * 3))
            self.states[key], out = apply_snapshot(self.states.get(key), snap)
            items.append((out, Envelope(None, None, "bench", 0, self.n, now)))
        self.store.write(build_batch(items))

    def close(self) -> None:
        self.store.close()


Figures = dict[tuple[str, str], tuple[float, float]]  # (timeframe, case) -> (p50, p99) ms


def bench_dashboard(base: str, token: str, ws: uuid.UUID, requests: int, url: str, campaigns: int) -> Figures:
    """Three cases, each with ``requests`` loads after 5 of warm-up:
    - quiet: nothing commits between loads (the server may reuse whole answers);
    - live: one campaign's poll of today commits before each load (the pipeline's
      normal rhythm: every answer is computed again, but the settled days' campaign
      sums stay valid);
    - restated: one campaign's restatement of a settled day commits before each load
      (the restatement loop, about twice a day per account: the settled days are read
      again too, the worst case)."""
    h = {"Authorization": f"Bearer {token}"}
    today = datetime.now(UTC).date()
    poller = Poller(url, ws, campaigns)
    figures: Figures = {}
    try:
        with httpx.Client(base_url=base, headers=h, timeout=60) as c:
            for tf in ("last_30_days", "today"):
                for mode in ("quiet", "live", "restated"):
                    if tf == "today" and mode == "restated":
                        continue  # today has no settled day
                    times = []
                    for i in range(requests + 5):
                        if mode != "quiet":
                            poller.commit(today if mode == "live" else today - timedelta(days=5))
                        t0 = time.perf_counter()
                        r = c.get("/dashboard", params={"workspace_id": str(ws), "timeframe": tf})
                        dt = (time.perf_counter() - t0) * 1000
                        r.raise_for_status()
                        if i >= 5:  # warm-up
                            times.append(dt)
                    print(f"GET /dashboard {tf:13} {mode:8}: n={len(times)} p50={statistics.median(times):.1f} ms "
                          f"p99={pct(times, 99):.1f} ms max={max(times):.1f} ms", flush=True)
                    figures[(tf, mode)] = (statistics.median(times), pct(times, 99))
    finally:
        poller.close()
    return figures


class SseClient(asyncio.Protocol):
    """One EventSource, as light as a client can be: it parses the bytes where the event
    loop hands them over and timestamps first, so the figure is the server's delay, not
    the measuring process's."""

    def __init__(self, request: bytes, latencies: list[float], on_ready: Callable[[], None]) -> None:
        self.request = request
        self.latencies = latencies
        self.on_ready = on_ready
        self.buf = b""
        self.event = ""
        self.got = 0
        self.dropped = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.startswith(b"event:"):
                self.event = line[6:].strip().decode()
                if self.event == "ready":
                    self.on_ready()
            elif line.startswith(b"data:") and self.event == "update":
                msg = json.loads(line[5:])
                self.got += msg["entries"]
                # account_id carries the XADD time
                self.latencies.extend((now - float(ch["account_id"])) * 1000 for ch in msg["changes"])
            elif line.startswith(b"data:") and self.event == "dropped":
                self.dropped = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def sse_clients(port: int, path: str, clients: int, expect: int, ready: Any, published: Any,
                      results: Any) -> None:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    connected = [0]

    def on_ready() -> None:
        connected[0] += 1
        if connected[0] == clients:
            ready.set()

    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
    protos: list[SseClient] = []
    for _ in range(clients):
        _, proto = await loop.create_connection(lambda: SseClient(request, latencies, on_ready), "127.0.0.1", port)
        protos.append(proto)
    while not published.is_set():
        await asyncio.sleep(0.05)
    deadline = loop.time() + 30
    while loop.time() < deadline and any(p.got < expect and not p.dropped and not p.closed for p in protos):
        await asyncio.sleep(0.05)
    results.send((latencies, [p.got for p in protos]))


def run_sse_clients(*args: Any) -> None:
    """The clients' process (spawned): the measuring side never shares a CPU-bound
    event loop with the publisher."""
    asyncio.run(sse_clients(*args))


def bench_sse(port: int, token: str, ws: uuid.UUID, clients: int, rate: float, seconds: float,
              redis_url: str, pid: int) -> None:
    expect = int(rate * seconds)
    ctx = multiprocessing.get_context("spawn")
    ready, published = ctx.Event(), ctx.Event()
    receive, send = ctx.Pipe(duplex=False)
    path = f"/stream?workspace_id={ws}&token={token}"
    child = ctx.Process(target=run_sse_clients, args=(port, path, clients, expect, ready, published, send))
    child.start()
    try:
        if not ready.wait(timeout=120):
            raise RuntimeError("SSE clients did not all connect")
        pub = LivePublisher(redis_url)
        proc = psutil.Process(pid)
        rss_peak = proc.memory_info().rss
        for i in range(expect):
            t = time.time()
            pub.publish({str(ws): {"schema": "metricx.live.v1", "workspace_id": str(ws), "committed_at": "x",
                                   "changes": [{"provider": "sim", "account_id": repr(t), "currency": "USD",
                                                "report_date": "2026-01-01", "bucket_start": f"b{i}",
                                                "spend": "1", "impressions": 1, "clicks": 0, "conversions": "0",
                                                "revenue": "0"}]}})
            rss_peak = max(rss_peak, proc.memory_info().rss)
            time.sleep(max(0.0, 1 / rate - (time.time() - t)))
        published.set()
        pub.close()
        if not receive.poll(60):
            raise RuntimeError("SSE clients did not report")
        latencies, counts = receive.recv()
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    lost = sum(expect - c for c in counts)
    print(f"SSE {clients} clients, {rate}/s for {seconds:.0f}s: delivered {len(latencies)} changes, "
          f"latency p50={statistics.median(latencies):.1f} ms p99={pct(latencies, 99):.1f} ms "
          f"max={max(latencies):.1f} ms; lost events={lost}; server peak RSS={rss_peak / 2**20:.0f} MiB", flush=True)


def fill(url: str, ws: uuid.UUID, args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL, {"ws": ws, "ads": args.ads, "campaigns": args.campaigns, "days": args.days})
        conn.execute(FILL_CAMPAIGN, {"ws": ws})
        conn.execute(FILL_ACCOUNT, {"ws": ws})
        conn.execute(FILL_15M, {"ws": ws})
        conn.execute(FILL_ACCOUNT_15M, {"ws": ws})
        conn.execute("VACUUM ANALYZE")
        n = conn.execute("SELECT count(*) FROM metrics_daily").fetchone()
    # TimescaleDB: the aggregates' first materialisation of the filled days, done now as
    # the refresh policies would, rather than during the measurements (a steady state).
    databases.refresh_aggregates(url)
    print(f"data: {n[0] if n else 0} metrics_daily rows ({args.ads} ads, {args.campaigns} campaigns, "
          f"{args.days} days) in {time.perf_counter() - t0:.1f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--campaigns", type=int, default=1000)
    ap.add_argument("--ads", type=int, default=20_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=2.0, help="live updates per second")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--skip-dashboard", action="store_true")
    ap.add_argument("--skip-sse", action="store_true")
    fl.add_argument(ap)
    args = ap.parse_args()
    settings = load_settings()
    flavours = fl.chosen(settings, args.flavours)
    dashboards: dict[str, Figures] = {}
    for i, flavour in enumerate(flavours):
        print(f"-- on {fl.LABELS[flavour]}", flush=True)
        with bench_database(flavour) as url, tempfile.TemporaryDirectory() as tmp:
            ws = setup_tenant(url)
            if not args.skip_dashboard:
                fill(url, ws, args)
            dev = Path(tmp)
            key = load_or_create_key(dev, "ES256")
            token = mint(key, "ES256", issuer="metricx-dev", audience="metricx", sub="bench", workspace_id=str(ws))
            port = 18765
            with server(url, dev, port, {"METRICX_STREAM_TOKEN_TTL_S": "600"}) as proc:
                base = f"http://127.0.0.1:{port}"
                if not args.skip_dashboard:
                    dashboards[flavour] = bench_dashboard(base, token, ws, args.requests, url, args.campaigns)
                if i == 0 and not args.skip_sse:
                    r = httpx.post(f"{base}/stream/token", params={"workspace_id": str(ws)},
                                   headers={"Authorization": f"Bearer {token}"})
                    r.raise_for_status()
                    bench_sse(port, r.json()["token"], ws, args.clients, args.rate, args.seconds,
                              settings.redis.url, proc.pid)
            import redis

            rc = redis.Redis.from_url(settings.redis.url)
            rc.delete(live_stream_key(str(ws)))
            rc.close()
    if dashboards:
        cases = list(next(iter(dashboards.values())))
        rows = [(f"/dashboard {tf} {case}, {q}", {f: dashboards[f][(tf, case)][k] if f in dashboards else None
                                                  for f in flavours})
                for tf, case in cases for k, q in ((0, "p50 ms"), (1, "p99 ms"))]
        print("\n== metricx serving benchmark ==")
        print(fl.side_by_side("figure", rows, flavours, fmt=lambda v: f"{v:,.1f}"))


if __name__ == "__main__":
    main()
