"""Faults survived, measured: the real pipeline, notifier and server under a steady
simulated load, while (one at a time) the Kafka broker restarts, PostgreSQL restarts,
Redis stops for a while, and the pipeline, the notifier and the server are killed -9
(and started again, as a supervisor would).

After each fault, with the load paused and everything committed:

- totals are exact against the simulator's oracle (``expected_totals``: per series, what
  the platform reported last), in every stored view;
- the alerts are exactly those a fault-free reference run of the same snapshots through
  the same rules fires (fold + watch in this process), each one delivered to its
  workspace's Slack channel exactly once (a delivery the notifier was killed in the
  middle of is 'unknown': received at most once, never resent — the outbox's contract);
- the server answers (``/readyz``, ``/dashboard``), and the live stream client, which
  reconnects with ``Last-Event-ID`` as a browser does, has caught up with the Redis
  stream and received every entry's changes exactly once since its last ``reset``;
- while a dependency is down each process that uses it stays up (same pid), says so in
  ``/readyz`` and in its log (down, then back), and retries.

The time from each fault to recovered operation is written to
``.data/bench/recovery.json`` (``make bench`` prints it); nothing here asserts on time.
Redis stays down ``METRICX_FAULT_REDIS_OUTAGE_S`` seconds: 10 in the suite (shorter
than the 30 s of the hardening brief, to keep ``make test`` short; ``tests.bench.bench_recovery``
runs the suite with 30).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest
import redis

from adapters.kafka import Producer, ensure_topics
from adapters.redis_live import live_stream_key
from domain.deltas import apply_snapshot
from domain.rulebook import RuleBook
from domain.sim.generator import expected_totals
from ground.settings import load_settings
from pipelines.steps import watch_step, watch_target
from schemas.insight import Snapshot
from schemas.migrate import upgrade
from schemas.rules import RuleV1, rule_message, to_rule
from serving.dev_issuer import public_jwk
from tests.fakes.slack_server import FakeSlack, fingerprints_in
from tests.faults.conftest import (
    FaultServices,
    LiveKey,
    Load,
    Proc,
    StreamClient,
    add_changes,
    free_port,
    wait_for,
)
from tests.integration.test_pipeline_e2e import assert_exact, simulated
from tests.integration.totals import normalise, progress
from tests.notifier.factory import KEY, channel
from tests.serving.conftest import AUDIENCE, ISSUER, Issuer

pytestmark = pytest.mark.faults

REDIS_OUTAGE_S = float(os.environ.get("METRICX_FAULT_REDIS_OUTAGE_S", "10"))
RATE = float(os.environ.get("METRICX_FAULT_LOAD_RATE", "150"))  # snapshots per second
PHASE = 2_000  # snapshots published per fault
SEED = 31
SPEND_AT_LEAST = "20"  # the rule: an ad that spent this much in its account's day
USER = "fault-user"
RECOVERY_FILE = load_settings().data_dir / "bench" / "recovery.json"


@dataclass
class Stack:
    services: FaultServices
    db: str
    raw: str
    pipeline: Proc
    notifier: Proc
    server: Proc
    metrics: dict[str, int]  # process -> metrics port
    server_port: int
    load: Load
    client: StreamClient
    slack: FakeSlack
    book: RuleBook
    token: str
    ws: str
    recovery: dict[str, dict[str, float]] = field(default_factory=dict)
    unknown_ok: bool = False  # set once the notifier was killed (the outbox's honest gap)

    @property
    def procs(self) -> tuple[Proc, ...]:
        return (self.pipeline, self.notifier, self.server)

    def progress(self) -> int:
        try:
            return progress(self.db, self.raw)
        except psycopg.OperationalError:
            return -1  # the database is the fault right now

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return r.status_code, r.json()


def answers(port: int) -> bool:
    return readyz(port)[0] == 200


def says_down(port: int, dependency: str) -> bool:
    status, body = readyz(port)
    deps = body.get("dependencies", body)
    dep = deps.get(dependency)
    down = dep is not None and (dep.get("up") is False if isinstance(dep, dict) else dep != "ok")
    return status == 503 and down


def serve_jwks(issuer: Issuer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"keys": issuer.published}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def reference_alerts(snaps: list[Snapshot], book: RuleBook) -> set[str]:
    """A fault-free run of the same snapshots through the same steps, in this process:
    per entity in publishing order (a partition keeps that order for a key)."""
    states: dict[str, Any] = {}
    watches: dict[str, Any] = {}
    out: set[str] = set()
    for s in snaps:
        states[s.entity_key], outcome = apply_snapshot(states.get(s.entity_key), s, 35)
        target = watch_target(book, outcome)
        if target is not None:
            key, applied = target
            watches[key], alerts = watch_step(book, timedelta(0), watches.get(key), applied)
            out |= {a.fingerprint for a in alerts}
    return out


@pytest.fixture(scope="module")
def stack(fault_services: FaultServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = fault_services.settings
    upgrade(settings.database.sqlalchemy_url, "auto")
    ensure_topics(settings.kafka.bootstrap, settings.kafka.topics(4))
    snaps = simulated(SEED, hours=36)
    workspaces = sorted({s.workspace_id for s in snaps})
    logs = tmp_path_factory.mktemp("fault-logs")
    with contextlib.ExitStack() as exit_stack:
        slack = exit_stack.enter_context(FakeSlack().running())
        book = RuleBook()
        producer = Producer(settings.kafka.bootstrap, client_id="fault-rules")
        with psycopg.connect(settings.database.libpq_url, autocommit=True) as conn:
            for i, ws in enumerate(workspaces):
                ch = channel(conn, "slack", slack.hook(f"ws{i}"), ws=uuid.UUID(ws))
                rule = RuleV1.model_validate({
                    "id": str(uuid.uuid4()), "workspace_id": ws, "name": "spend watch",
                    "conditions": {"op": "and", "conditions": [
                        {"metric": "spend", "operator": ">=", "value": SPEND_AT_LEAST}]},
                    "updated_at": datetime.now(UTC).isoformat(),
                    "actions": {"notify": [str(ch)], "notify_recovery": False}})
                book.put(to_rule(rule))
                producer.send(settings.kafka.rules_topic, rule_message(rule), str(rule.id))
            uid = conn.execute("INSERT INTO users (sub) VALUES (%s) RETURNING id", (USER,)).fetchone()
            assert uid is not None
            conn.execute("INSERT INTO memberships (user_id, workspace_id, role) VALUES (%s, %s, 'owner')",
                         (uid[0], workspaces[0]))
        producer.flush()

        issuer = Issuer()
        issuer.published.append(public_jwk(issuer.key, "ES256"))
        jwks = serve_jwks(issuer)
        exit_stack.callback(jwks.shutdown)

        ports = {"pipeline": free_port(), "notifier": free_port()}
        server_port = free_port()
        base = {**fault_services.env, "METRICX_DATA_DIR": str(logs / "data"), "PYTHONUNBUFFERED": "1",
                "METRICX_LAG_INTERVAL_S": "1"}
        pipeline = Proc("pipeline", ["pipeline"], {
            **base, "METRICX_METRICS_PORT": str(ports["pipeline"]), "METRICX_SNAPSHOT_INTERVAL_S": "1",
            "METRICX_RULES_WARMUP_S": "0"}, logs)
        notifier = Proc("notifier", ["notifier"], {
            **base, "METRICX_METRICS_PORT": str(ports["notifier"]), "METRICX_TOKEN_KEYS": f"k1:{KEY}",
            "METRICX_TOKEN_KEY_ID": "k1", "METRICX_SLACK_MIN_INTERVAL_S": "0.2",
            "METRICX_NOTIFIER_SEND_LEASE_S": "5", "METRICX_NOTIFIER_GROUP_ID": "fault-notifier"}, logs)
        server = Proc("server", ["serve", "--port", str(server_port)], {
            **base, "METRICX_AUTH_ISSUER": ISSUER, "METRICX_AUTH_AUDIENCE": AUDIENCE,
            "METRICX_AUTH_JWKS_URL": issuer.url, "METRICX_AUTH_ALGORITHM": "ES256",
            "METRICX_STREAM_TOKEN_SECRET": "fault-suite-stream-secret-0123456789", "METRICX_SSE_HEARTBEAT_S": "1"},
            logs)
        for p in (pipeline, notifier, server):
            p.start()
            exit_stack.callback(p.kill9)
        for name, port in ports.items():
            wait_for(partial(answers, port), f"{name} ready", 120, alive=(pipeline, notifier))
        wait_for(lambda: readyz(server_port)[0] == 200, "server ready", 120, alive=(server,))

        token = issuer.token(USER, exp=int(time.time()) + 3 * 3600)
        client = StreamClient(f"http://127.0.0.1:{server_port}", token, workspaces[0]).start()
        exit_stack.callback(client.close)
        wait_for(lambda: bool(client.connections) and client.connections[0].first_event == "ready",
                 "the stream client's first event")
        load = Load(settings.kafka.bootstrap, settings.kafka.raw_topic, snaps, RATE)
        exit_stack.callback(load.close)
        st = Stack(fault_services, settings.database.libpq_url, settings.kafka.raw_topic, pipeline, notifier, server, ports,
                   server_port, load, client, slack, book, token, workspaces[0])
        try:
            yield st
        finally:
            write_recovery(st.recovery)


def write_recovery(recovery: dict[str, dict[str, float]]) -> None:
    if not recovery:
        return
    RECOVERY_FILE.parent.mkdir(parents=True, exist_ok=True)
    RECOVERY_FILE.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_snapshots_per_s": RATE, "redis_outage_s": REDIS_OUTAGE_S, "faults": recovery,
    }, indent=1) + "\n")


# -- the phases' common parts ----------------------------------------------------------------


def begin(st: Stack) -> None:
    """Publish the next phase of the load and wait until the pipeline is committing it."""
    assert st.load.remaining() >= PHASE, "the simulated stream is too short for the phases"
    start = max(0, st.progress())
    st.load.add(PHASE)
    wait_for(lambda: st.progress() >= start + PHASE // 5, "the pipeline to commit the new load", alive=st.procs)


def caught_up(st: Stack, t0: float, t_back: float, sent_at_back: int) -> dict[str, float]:
    """Fault -> the pipeline has committed everything published before the fault ended."""
    t = wait_for(lambda: st.progress() >= sent_at_back, "the pipeline to catch up", alive=st.procs)
    return figures(t0, t_back, t)


def figures(t0: float, t_back: float, t_ok: float, **more: float) -> dict[str, float]:
    """``down_s``: how long the fault lasted (the test holds a dependency down while it
    checks what the processes say); ``recovered_s``: from the fault to correct operation;
    ``after_back_s``: from the dependency's (or the process's) return to correct operation."""
    return {"down_s": round(t_back - t0, 2), "recovered_s": round(t_ok - t0, 2),
            "after_back_s": round(t_ok - t_back, 2), **{k: round(v - t0, 2) for k, v in more.items()}}


def logged_outage(proc: Proc, dependency: str, run: int | None = None) -> bool:
    events = [(e.get("msg"), e.get("dependency")) for e in proc.log_events(run)]
    return ("dependency down; retrying with backoff", dependency) in events and ("dependency back", dependency) in events


def stream_entries(st: Stack) -> list[tuple[str, dict[str, Any]]]:
    r = redis.Redis.from_url(st.services.settings.redis.url)
    try:
        rows: Any = r.xrange(live_stream_key(st.ws), "-", "+")
    finally:
        r.close()
    return [(i.decode(), json.loads(f[b"data"])) for i, f in rows]


def key_of(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def settle_and_check(st: Stack) -> None:
    published = st.load.settle()
    wait_for(lambda: st.progress() == len(published), "every published snapshot to be committed", alive=st.procs)

    # Totals: every stored view equals the simulator's oracle.
    assert_exact(st.db, normalise(expected_totals(published)))

    # Alerts: those of a fault-free run, each delivered once.
    want = reference_alerts(published, st.book)
    assert want, "the load fired no alert: the phase proves nothing about alerts"
    with psycopg.connect(st.db, autocommit=True) as conn:
        stored = {r[0] for r in conn.execute("SELECT fingerprint FROM alerts")}
        assert stored == want, (sorted(stored - want)[:5], sorted(want - stored)[:5])

        def delivered() -> bool:
            row = conn.execute("SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'failed', 'sending')) "
                               "FROM alert_deliveries").fetchone()
            return row == (len(want), 0)

        wait_for(delivered, "every alert's delivery to reach a final state", alive=st.procs)
        status: dict[str, str] = dict(conn.execute("SELECT fingerprint, status FROM alert_deliveries").fetchall())
    got: Counter[str] = Counter()
    for r in st.slack.received:
        if r.answered == 200:
            got.update(fingerprints_in(r.body))
    assert set(got) <= want, sorted(set(got) - want)[:5]
    twice = [fp for fp, n in got.items() if n > 1]
    assert not twice, twice[:5]
    unknown = {fp for fp, s in status.items() if s == "unknown"}
    assert {fp for fp, s in status.items() if s != "sent"} == unknown, Counter(status.values())
    assert not unknown or st.unknown_ok, sorted(unknown)[:5]
    assert {fp for fp in want if fp not in unknown} <= set(got), "an alert marked sent never reached Slack"

    # The server answers.
    assert readyz(st.server_port)[0] == 200
    dash = httpx.get(f"{st.base}/dashboard", params={"workspace_id": st.ws},
                     headers={"Authorization": f"Bearer {st.token}"}, timeout=30)
    assert dash.status_code == 200, dash.text

    # The live stream: caught up, every entry since the last reset received exactly once.
    entries = stream_entries(st)
    assert entries
    wait_for(lambda: st.client.last_id is not None and key_of(st.client.last_id) >= key_of(entries[-1][0]),
             "the stream client to catch up with the Redis stream")
    since = key_of(st.client.resets[-1][0]) if st.client.resets else (0, 0)
    want_acc: dict[LiveKey, tuple[Decimal, int]] = {}
    for i, msg in entries:
        if key_of(i) > since:
            add_changes(want_acc, msg.get("changes", []))
    with st.client.lock:
        assert st.client.acc == want_acc
    for p in st.procs:
        p.assert_running()


# -- the faults, one per test, in this order ---------------------------------------------------


def test_kafka_broker_restart(stack: Stack) -> None:
    st = stack
    begin(st)
    pids = [p.pid for p in st.procs]
    t0 = time.monotonic()
    st.services.run("stop", "kafka")
    for name in ("pipeline", "notifier"):
        wait_for(partial(says_down, st.metrics[name], "kafka"), f"{name} /readyz to report kafka down",
                 alive=st.procs)
    st.services.run("start", "kafka")
    t_back, sent = time.monotonic(), st.load.sent
    st.recovery["kafka_restart"] = caught_up(st, t0, t_back, sent)
    for name in ("pipeline", "notifier"):
        wait_for(partial(answers, st.metrics[name]), f"{name} ready again", alive=st.procs)
    assert [p.pid for p in st.procs] == pids, "a process restarted: it must wait out the broker"
    assert logged_outage(st.pipeline, "kafka") and logged_outage(st.notifier, "kafka")
    settle_and_check(st)


def test_postgresql_restart(stack: Stack) -> None:
    st = stack
    begin(st)
    pids = [p.pid for p in st.procs]
    t0 = time.monotonic()
    st.services.run("stop", "postgres")
    wait_for(lambda: says_down(st.metrics["pipeline"], "postgres"), "pipeline /readyz: postgres down",
             alive=st.procs)
    wait_for(lambda: says_down(st.metrics["notifier"], "postgres"), "notifier /readyz: postgres down",
             alive=st.procs)
    wait_for(lambda: says_down(st.server_port, "database"), "server /readyz: database down", alive=st.procs)
    st.services.run("start", "postgres")
    t_back, sent = time.monotonic(), st.load.sent
    replies: list[httpx.Response] = []

    def dashboard_answers() -> bool:
        replies.append(httpx.get(f"{st.base}/dashboard", params={"workspace_id": st.ws}, timeout=10,
                                 headers={"Authorization": f"Bearer {st.token}"}))
        return replies[-1].status_code == 200

    t = wait_for(dashboard_answers, "the dashboard to answer again", alive=st.procs)
    # A request that meets a connection the restart broke is a 503 to retry, never a 500.
    assert all(a.status_code == 503 and a.headers.get("retry-after") for a in replies[:-1]), \
        [(a.status_code, a.text[:100]) for a in replies[:-1]]
    rec = caught_up(st, t0, t_back, sent)
    st.recovery["postgres_restart"] = {**rec, "server_answering_s": round(t - t0, 2)}
    assert [p.pid for p in st.procs] == pids
    assert logged_outage(st.pipeline, "postgres") and logged_outage(st.notifier, "postgres")
    settle_and_check(st)


def test_redis_stopped_for_a_while(stack: Stack) -> None:
    st = stack
    begin(st)
    pids = [p.pid for p in st.procs]
    resets = len(st.client.resets)
    t0 = time.monotonic()
    st.services.run("stop", "redis")
    at_stop = st.progress()
    wait_for(lambda: says_down(st.metrics["pipeline"], "redis"), "pipeline /readyz: redis down", alive=st.procs)
    wait_for(lambda: says_down(st.server_port, "redis"), "server /readyz: redis down", alive=st.procs)
    # Commits go on without Redis: live updates are best effort, the tables the truth.
    wait_for(lambda: st.progress() >= at_stop + 200, "commits while Redis is down", alive=st.procs)
    wait_for(lambda: time.monotonic() - t0 >= REDIS_OUTAGE_S, "the outage's length", REDIS_OUTAGE_S + 60,
             alive=st.procs, poll_s=0.5)
    st.services.run("start", "redis")
    t_back = time.monotonic()
    # The dashboards are told to reload (updates were lost while Redis was away).
    t = wait_for(lambda: len(st.client.resets) > resets, "the stream client's reset", alive=st.procs)
    t_live = wait_for(lambda: any(at > t_back for at in st.client.events_at), "live updates again", alive=st.procs)
    st.recovery["redis_outage"] = figures(t0, t_back, max(t, t_live))
    assert [p.pid for p in st.procs] == pids
    assert logged_outage(st.pipeline, "redis")
    settle_and_check(st)


def test_pipeline_killed(stack: Stack) -> None:
    st = stack
    begin(st)
    t0 = time.monotonic()
    st.pipeline.kill9()
    st.pipeline.start()
    t_back, sent = time.monotonic(), st.load.sent
    st.recovery["pipeline_kill9"] = caught_up(st, t0, t_back, sent)
    resumed = [e for e in st.pipeline.log_events() if e.get("msg") == "kafka partition assigned"]
    assert resumed and all(e["resume_offset"] is not None for e in resumed), resumed  # from its snapshot
    settle_and_check(st)


def test_notifier_killed(stack: Stack) -> None:
    st = stack
    begin(st)
    t0 = time.monotonic()
    st.notifier.kill9()
    st.unknown_ok = True
    st.notifier.start()
    t_back = time.monotonic()
    with psycopg.connect(st.db, autocommit=True) as conn:
        restarted_at = conn.execute("SELECT clock_timestamp()").fetchone()

        def flowing() -> bool:
            # An alert queued after the restart has been sent: the replacement took over
            # the topic's partitions (after the killed member's session expired) and sends.
            row = conn.execute("SELECT count(*) FROM alert_deliveries WHERE created_at > %s AND status = 'sent'",
                               restarted_at).fetchone()
            return row is not None and row[0] > 0

        t = wait_for(flowing, "alerts to flow again after the restart", alive=st.procs)
    st.recovery["notifier_kill9"] = figures(t0, t_back, t)
    settle_and_check(st)


def test_server_killed(stack: Stack) -> None:
    st = stack
    begin(st)
    before = len(st.client.connections)
    last_id = st.client.last_id
    t0 = time.monotonic()
    st.server.kill9()
    st.server.start()
    t_back = time.monotonic()
    t_ready = wait_for(lambda: readyz(st.server_port)[0] == 200, "the server to answer", alive=st.procs)
    t_stream = wait_for(lambda: len(st.client.connections) > before and st.client.connections[-1].first_at is not None,
                        "the stream client to reconnect", alive=st.procs)
    st.recovery["server_kill9"] = figures(t0, t_back, t_stream, server_ready_s=t_ready)
    conn = st.client.connections[before]
    assert conn.sent_last_event_id is not None and last_id is not None
    assert key_of(conn.sent_last_event_id) >= key_of(last_id)  # it resumed where it was
    # Resumed, not restarted: the backlog or a resumed 'ready', never a reset.
    assert conn.first_event in ("update", "ready"), conn.first_event
    if conn.first_event == "ready":
        assert conn.first_data is not None and conn.first_data["resumed"] is True
    settle_and_check(st)
