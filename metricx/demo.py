"""``metricx demo``: simulated ad accounts -> Kafka -> pipeline -> PostgreSQL -> dashboard.

Starts the pipeline, the simulated poller and the HTTP server as child processes (their
logs go to ``.data/logs``), mints a development token for the first simulated workspace, and prints a summary of today's
numbers every few seconds until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from adapters.crypto import generate_key
from domain.sim.world import build_world
from ground.settings import Settings
from ground.stopping import stop_on_signals
from schemas.rules import RuleIn
from serving.rules_store import PublishFailed, RulePublisher, insert_rule, publish_ids, update_rule

DEMO_SUMMARY = """
SELECT d.workspace_id, d.provider, d.account_id, d.currency, count(*) AS entities,
       sum(d.spend) AS spend, sum(d.impressions) AS impressions, sum(d.clicks) AS clicks,
       sum(d.conversions) AS conversions, sum(d.revenue) AS revenue, max(d.last_captured_at) AS last
FROM metrics_daily d
WHERE d.report_date = (now() AT TIME ZONE d.timezone)::date
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3
"""


STORAGE_FACTS = (
    "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
    "'timescaledb' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))"
)


def storage_line(ts_version: str | None, preloaded: bool, mode: str) -> str:
    """What the demo's database runs on, and, when that is plain PostgreSQL although it
    need not be, what to change."""
    if ts_version:
        return f"TimescaleDB {ts_version} (hypertables, continuous aggregates, policies)"
    if mode == "off":
        return "plain PostgreSQL (METRICX_TIMESCALEDB=off)"
    if preloaded:
        return ("plain PostgreSQL: this database was created before TimescaleDB was installed, and a "
                "database keeps its flavour; `make clean` (removes all local data) then `make demo` "
                "starts over on TimescaleDB")
    return "plain PostgreSQL: TimescaleDB is not installed (`make setup` builds it; see README, TimescaleDB)"


def storage(settings: Settings) -> str:
    try:
        with psycopg.connect(settings.database.libpq_url) as conn:
            row = conn.execute(STORAGE_FACTS).fetchone()
    except psycopg.Error as exc:
        return f"unknown ({exc})"
    assert row is not None
    return storage_line(row[0], bool(row[1]), settings.database.timescaledb)


def demo_token(env: dict[str, str], seed: int) -> tuple[str, str]:
    """(workspace id, token) for the first simulated workspace, owner membership granted."""
    world = build_world(seed)
    ws = world.workspaces[0]
    tz = next(a.timezone for a in world.accounts if a.workspace_id == ws.id)
    out = subprocess.run(
        [sys.executable, "-m", "metricx.cli", "token", "--user", "demo@metricx.local", "--workspace", ws.id,
         "--grant", "owner", "--name", ws.name, "--timezone", tz, "--ttl", str(7 * 24 * 3600)],
        env=env, capture_output=True, text=True, check=True,
    )
    return ws.id, out.stdout.strip()


# Each process's /metrics and /readyz (an explicit METRICX_METRICS_PORT wins; a taken
# port only costs that endpoint).
DEMO_METRICS_PORTS = {"pipeline": 9101, "poller": 9102, "notifier": 9103}

DEMO_RULE = {
    "name": "Demo: ad losing money",
    "scope": {"level": "ad"},
    "conditions": {"op": "and", "conditions": [{"metric": "roas", "operator": "<", "value": "1"}]},
    "guards": {"min_spend": "50", "min_impressions": 500},
    "trigger": {"mode": "once_per_day"},
    "actions": {"pause": {"enabled": True, "dry_run": True}},
}


def ensure_demo_rule(settings: Settings, ws: str) -> None:
    """One stop-loss rule for the demo workspace, saved and published the way the Rules
    API does it, so the alert feed has something to show and the notifier audits a
    dry-run pause.  Rules the user made are left alone."""
    body = RuleIn.model_validate(DEMO_RULE)
    with psycopg.connect(settings.database.libpq_url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute("SELECT id FROM rules WHERE workspace_id = %s AND created_by = 'demo' LIMIT 1",
                           (ws,)).fetchone()
        if row is None:
            rule_id = insert_rule(conn, uuid.UUID(ws), body, "demo")
        else:
            rule_id = row["id"]
            update_rule(conn, uuid.UUID(ws), rule_id, body)
        publisher = RulePublisher(settings.kafka.bootstrap, settings.kafka.rules_topic)
        result = publish_ids(conn, publisher, [rule_id])
        publisher.close()
    if result.failed:
        raise PublishFailed(result.failed)


def demo_key(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_key())
        path.chmod(0o600)
    return path.read_text().strip()


def _print_summary(settings: Settings) -> None:
    try:
        with psycopg.connect(settings.database.libpq_url) as conn:
            rows = conn.execute(DEMO_SUMMARY).fetchall()
    except psycopg.Error as exc:
        print(f"(summary unavailable: {exc})")
        return
    print(f"\n— today so far, per ad account (account-local day), {datetime.now():%H:%M:%S} —")
    print(f"{'workspace':10} {'account':18} {'cur':4} {'ads':>4} {'spend':>12} {'clicks':>8} "
          f"{'conv':>8} {'revenue':>12} {'ROAS':>6}")
    for ws, _prov, acct, cur, n, spend, _imp, clicks, conv, rev, _last in rows:
        roas = f"{rev / spend:.2f}" if spend else "—"
        print(f"{str(ws)[:8]:10} {acct:18} {cur:4} {n:>4} {spend:>12.2f} {clicks:>8} "
              f"{conv:>8.2f} {rev:>12.2f} {roas:>6}", flush=True)


def run_demo(settings: Settings, *, interval: float, every: float, duration: float | None, seed: int,
             port: int) -> int:
    exe = [sys.executable, "-m", "metricx.cli"]
    logs_dir: Path = settings.data_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    # The children inherit this process's environment (the same settings), plus: the demo
    # signs in with the local development issuer; never enable it in production.
    env = {**os.environ, "METRICX_DEV_ISSUER": "1"}
    ws, token = demo_token(env, seed)
    ensure_demo_rule(settings, ws)
    if not settings.tokens.keys.get_secret_value():
        # The notifier opens channel secrets with the token keyring: a local demo key.
        env["METRICX_TOKEN_KEYS"] = "demo:" + demo_key(settings.data_dir / "demo-token-key")
    procs: list[subprocess.Popen[bytes]] = []
    for name, cmd, metrics_port in (
        ("pipeline", [*exe, "pipeline"], DEMO_METRICS_PORTS["pipeline"]),
        ("poller", [*exe, "poller", "--sim", "--interval", str(interval), "--seed", str(seed)],
         DEMO_METRICS_PORTS["poller"]),
        ("serve", [*exe, "serve", "--port", str(port)], None),
        ("notifier", [*exe, "notifier"], DEMO_METRICS_PORTS["notifier"]),
    ):
        proc_env = env if metrics_port is None else {"METRICX_METRICS_PORT": str(metrics_port), **env}
        with open(logs_dir / f"{name}.log", "ab") as out:
            # Their own process group: Ctrl-C in the terminal reaches only the demo, which
            # forwards it once (twice, a second interrupt cut their graceful stops short).
            procs.append(subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=subprocess.STDOUT, process_group=0))
    stopping = stop_on_signals()
    print(
        "\nmetricx demo running: simulated ad accounts -> Kafka -> Bytewax -> PostgreSQL -> Redis -> dashboard\n"
        f"  storage:   {storage(settings)}\n"
        f"  dashboard: http://127.0.0.1:{port}/#token={token}\n"
        f"             (workspace {ws}, development token valid 7 days)\n"
        f"  tables:    psql {settings.database.libpq_url} -c 'SELECT * FROM metrics_daily LIMIT 5'\n"
        f"  live:      redis-cli XREVRANGE metricx:live:{ws} + - COUNT 1\n"
        f"  bad input: topic {settings.kafka.deadletter_topic}\n"
        f"  rules:     a demo stop-loss rule (dry-run pause); alerts: psql ... -c 'SELECT * FROM alerts'\n"
        f"  logs:      {logs_dir}/{{pipeline,poller,serve,notifier}}.log (JSON lines)\n"
        f"  metrics:   http://127.0.0.1:{port}/metrics, pipeline :{DEMO_METRICS_PORTS['pipeline']}, "
        f"poller :{DEMO_METRICS_PORTS['poller']}, notifier :{DEMO_METRICS_PORTS['notifier']} "
        "(/metrics, /readyz); `metricx status`\n"
        "  stop:      Ctrl-C\n",
        flush=True,
    )
    deadline = time.monotonic() + duration if duration else None
    try:
        while not stopping.is_set() and not (deadline and time.monotonic() > deadline):
            for p in procs:
                if p.poll() is not None:
                    print(f"a demo process exited with {p.returncode} (see {logs_dir}); stopping", file=sys.stderr)
                    return 1
            if stopping.wait(every):
                break
            _print_summary(settings)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0
