"""``metricx`` — the single entry point every Makefile target calls."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone

from metricx import logs
from metricx.settings import ConfigError, Settings, load_settings

log = logging.getLogger("metricx")

RAW_PARTITIONS_ENV = "METRICX_RAW_PARTITIONS"


def _settings() -> Settings:
    settings = load_settings()
    logs.configure(settings.log_level)
    return settings


def _check(settings: Settings, *, kafka: bool = False, db: bool = False, redis: bool = False) -> None:
    if kafka:
        from connectors.kafka import check_reachable as check_kafka

        check_kafka(settings.kafka_bootstrap)
    if db:
        from connectors.timescale import check_reachable as check_db

        check_db(settings.libpq_url)
    if redis:
        from connectors.redis_live import check_reachable as check_redis

        check_redis(settings.redis_url)


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings()
    _check(settings, kafka=True, db=True, redis=True)
    print("kafka, postgresql and redis are reachable")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from schemas.migrate import upgrade

    settings = _settings()
    _check(settings, db=True)
    flavor = upgrade(settings.sqlalchemy_url, args.timescaledb or settings.timescaledb)
    print(f"schema is up to date ({flavor})")
    return 0


def topic_specs(settings: Settings, partitions: int) -> list["TopicSpec"]:  # noqa: F821
    from connectors.kafka import TopicSpec

    return [
        TopicSpec(settings.raw_topic, partitions),
        TopicSpec(settings.deadletter_topic, 1),
        TopicSpec("metricx.alerts", 1),
        TopicSpec("metricx.rules", 1, {"cleanup.policy": "compact"}),
    ]


def cmd_topics(args: argparse.Namespace) -> int:
    from connectors.kafka import ensure_topics

    settings = _settings()
    _check(settings, kafka=True)
    ensure_topics(settings.kafka_bootstrap, topic_specs(settings, args.partitions))
    print("topics ready")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from pipelines.run import run_pipeline

    settings = _settings()
    _check(settings, kafka=True, db=True, redis=True)
    addresses = args.addresses.split(";") if args.addresses else None
    run_pipeline(
        settings,
        workers=args.workers,
        process_id=args.process_id,
        addresses=addresses,
        recovery=not args.no_recovery,
    )
    return 0


def cmd_poller(args: argparse.Namespace) -> int:
    settings = _settings()
    if not args.sim:
        print("only the simulated poller exists so far: use `metricx poller --sim`", file=sys.stderr)
        return 2
    from connectors.kafka import Producer
    from connectors.sim.poller import run_live
    from connectors.sim.world import build_world

    _check(settings, kafka=True)
    producer = Producer(settings.kafka_bootstrap, client_id="metricx-sim-poller")
    world = build_world(args.seed)
    run_live(producer, world, interval_s=args.interval, seed=args.seed)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Publish a fixed number of simulated snapshots as fast as possible (or at a rate)."""
    from connectors.kafka import Producer
    from connectors.sim.poller import run_bulk
    from connectors.sim.world import build_world_for_entities

    settings = _settings()
    _check(settings, kafka=True)
    producer = Producer(settings.kafka_bootstrap, client_id="metricx-sim-bulk")
    world = build_world_for_entities(args.seed, args.entities)
    start = time.monotonic()
    n = run_bulk(
        producer, world, snapshots=args.snapshots, seed=args.seed,
        end_utc=datetime.now(timezone.utc), rate=args.rate,
    )
    took = time.monotonic() - start
    print(f"published {n} snapshots over {args.entities} entities in {took:.1f}s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    _check(settings, db=True, redis=True)
    uvicorn.run("serving.app:create_app", factory=True, host=args.host, port=args.port, log_config=None)
    return 0


DEMO_SUMMARY = """
SELECT d.workspace_id, d.provider, d.account_id, d.currency, count(*) AS entities,
       sum(d.spend) AS spend, sum(d.impressions) AS impressions, sum(d.clicks) AS clicks,
       sum(d.conversions) AS conversions, sum(d.revenue) AS revenue, max(d.last_captured_at) AS last
FROM metrics_daily d
WHERE d.report_date = (now() AT TIME ZONE d.timezone)::date
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3
"""


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulated accounts -> Kafka -> pipeline -> PostgreSQL, with a live summary."""
    import psycopg

    settings = _settings()
    _check(settings, kafka=True, db=True, redis=True)
    exe = [sys.executable, "-m", "metricx.cli"]
    procs = [
        subprocess.Popen([*exe, "pipeline"]),
        subprocess.Popen([*exe, "poller", "--sim", "--interval", str(args.interval), "--seed", str(args.seed)]),
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(
        "\nmetricx demo running: simulated ad accounts -> Kafka -> Bytewax -> PostgreSQL -> Redis\n"
        f"  tables:  psql {settings.libpq_url} -c 'SELECT * FROM metrics_daily LIMIT 5'\n"
        "  live:    redis-cli --scan --pattern 'metricx:live:*'   then   redis-cli XREVRANGE <key> + - COUNT 1\n"
        f"  bad input: topic {settings.deadletter_topic}\n"
        "  stop:    Ctrl-C\n",
        flush=True,
    )
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not stopping:
            if deadline and time.monotonic() > deadline:
                break
            for p in procs:
                if p.poll() is not None:
                    print(f"a demo process exited with {p.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(args.every)
            try:
                with psycopg.connect(settings.libpq_url) as conn:
                    rows = conn.execute(DEMO_SUMMARY).fetchall()
            except psycopg.Error as exc:
                print(f"(summary unavailable: {exc})")
                continue
            print(f"\n— today so far, per ad account (account-local day), {datetime.now():%H:%M:%S} —")
            print(f"{'workspace':10} {'account':14} {'cur':4} {'ads':>4} {'spend':>12} {'clicks':>8} "
                  f"{'conv':>8} {'revenue':>12} {'ROAS':>6}")
            for ws, _prov, acct, cur, n, spend, _imp, clicks, conv, rev, _last in rows:
                roas = f"{rev / spend:.2f}" if spend else "—"
                print(f"{str(ws)[:8]:10} {acct:14} {cur:4} {n:>4} {spend:>12.2f} {clicks:>8} "
                      f"{conv:>8.2f} {rev:>12.2f} {roas:>6}", flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metricx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("check", help="check that Kafka, PostgreSQL and Redis are reachable").set_defaults(func=cmd_check)

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    p.add_argument("--timescaledb", choices=["auto", "on", "off"], default=None)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("topics", help="create the Kafka topics")
    p.add_argument("--partitions", type=int, default=int(os.environ.get(RAW_PARTITIONS_ENV, "4")))
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("pipeline", help="run the insight dataflow (Bytewax, with recovery)")
    p.add_argument("-w", "--workers", type=int, default=1, help="worker threads in this process")
    p.add_argument("-i", "--process-id", type=int, default=None, help="this process's index in a cluster")
    p.add_argument("-a", "--addresses", default=None, help="host:port of every process, ';'-separated")
    p.add_argument("--no-recovery", action="store_true", help="run without state snapshots (re-reads the topic)")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("poller", help="poll ad platforms and publish snapshots")
    p.add_argument("--sim", action="store_true", help="poll the simulated ad platform")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_poller)

    p = sub.add_parser("simulate", help="publish N simulated snapshots (load and tests)")
    p.add_argument("--snapshots", type=int, default=100_000)
    p.add_argument("--entities", type=int, default=5_000)
    p.add_argument("--rate", type=float, default=None, help="messages per second (default: as fast as possible)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("serve", help="run the HTTP server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="simulated accounts -> pipeline -> tables, with a live summary")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between simulated polls")
    p.add_argument("--every", type=float, default=10.0, help="seconds between summaries")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ConnectionError) as exc:
        print(f"metricx: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
