"""``metricx`` — the single entry point every Makefile target calls."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ground import logs
from ground.metrics import serve_metrics
from ground.retry import Backoff, wait_until_reachable
from ground.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from adapters.kafka import TopicSpec

log = logging.getLogger("metricx")

RAW_PARTITIONS_ENV = "METRICX_RAW_PARTITIONS"
# Metricx processes `metricx status` asks for /readyz: "name=http://host:port,...".
STATUS_SERVICES_ENV = "METRICX_STATUS_SERVICES"


def _settings() -> Settings:
    settings = load_settings()
    logs.configure(settings.log_level)
    return settings


def _check(settings: Settings, *, kafka: bool = False, db: bool = False, redis: bool = False) -> None:
    """One-shot commands: fail fast, with a message naming the setting."""
    for check in _checks(settings, kafka=kafka, db=db, redis=redis).values():
        check()


def _checks(settings: Settings, *, kafka: bool = False, db: bool = False,
            redis: bool = False) -> dict[str, Callable[[], None]]:
    out: dict[str, Callable[[], None]] = {}
    if kafka:
        from adapters.kafka import check_reachable as check_kafka

        out["kafka"] = lambda: check_kafka(settings.kafka_bootstrap)
    if db:
        from adapters.timescale import check_reachable as check_db

        out["postgres"] = lambda: check_db(settings.libpq_url)
    if redis:
        from adapters.redis_live import check_reachable as check_redis

        out["redis"] = lambda: check_redis(settings.redis_url)
    return out


def _start_service(settings: Settings, process: str, *, port_offset: int = 0, kafka: bool = False,
                   db: bool = False, redis: bool = False) -> None:
    """A long-running process: its /metrics, /healthz, /readyz endpoint first (so it
    can say what it waits for), then wait, with backoff, until its dependencies answer.
    One-shot commands fail fast instead (:func:`_check`)."""
    port = settings.metrics_port
    if port:
        port += port_offset
    serve_metrics(settings.metrics_host, port, process)
    wait_until_reachable(_checks(settings, kafka=kafka, db=db, redis=redis),
                         backoff=Backoff(cap_s=settings.retry_max_s))


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


def topic_specs(settings: Settings, partitions: int) -> list[TopicSpec]:
    """The same topics and sizes as ``deploy/services.sh create-topics``."""
    from adapters.kafka import TopicSpec, deadletter_topic_spec, raw_topic_spec

    return [
        raw_topic_spec(settings.raw_topic, partitions),
        deadletter_topic_spec(settings.deadletter_topic),
        TopicSpec(settings.alerts_topic, partitions),
        TopicSpec(settings.rules_topic, 1, {"cleanup.policy": "compact"}),
    ]


def cmd_topics(args: argparse.Namespace) -> int:
    from adapters.kafka import ensure_topics

    settings = _settings()
    _check(settings, kafka=True)
    ensure_topics(settings.kafka_bootstrap, topic_specs(settings, args.partitions))
    print("topics ready")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from pipelines.run import run_pipeline

    settings = _settings()
    _start_service(settings, "pipeline", port_offset=args.process_id or 0, kafka=True, db=True, redis=True)
    addresses = args.addresses.split(";") if args.addresses else None
    try:
        run_pipeline(
            settings,
            workers=args.workers,
            process_id=args.process_id,
            addresses=addresses,
            recovery=not args.no_recovery,
        )
    except (KeyboardInterrupt, Exception) as exc:
        if not _interrupted(exc):
            raise
        log.info("pipeline stopped by interrupt; the next start resumes from its last snapshot")
    return 0


def _interrupted(exc: BaseException | None) -> bool:
    """Bytewax re-raises Ctrl-C from inside a step wrapped in its own error."""
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def cmd_poller(args: argparse.Namespace) -> int:
    settings = _settings()
    if not args.sim:
        from metricx.cli.connections import run_pollers

        return run_pollers(settings, args.interval)
    from adapters.kafka import Producer
    from domain.sim.world import build_world
    from pollers.sim import run_live

    _start_service(settings, "poller", kafka=True)
    # No delivery deadline: a broker restart delays polls, it does not stop the poller.
    producer = Producer(settings.kafka_bootstrap, client_id="metricx-sim-poller", extra={"message.timeout.ms": 0})
    world = build_world(args.seed)
    try:
        run_live(producer, world, interval_s=args.interval, seed=args.seed)
    except KeyboardInterrupt:
        # Ctrl-C reaches this process twice under `make demo` (the terminal's signal to
        # the process group, then the demo's own forward): the second must not cut the
        # flush short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        producer.flush()
        log.info("poller stopped by interrupt; every published snapshot was delivered")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Publish a fixed number of simulated snapshots as fast as possible (or at a rate)."""
    from adapters.kafka import Producer
    from domain.sim.world import build_world_for_entities
    from pollers.sim import run_bulk

    settings = _settings()
    _check(settings, kafka=True)
    producer = Producer(settings.kafka_bootstrap, client_id="metricx-sim-bulk")
    world = build_world_for_entities(args.seed, args.entities)
    start = time.monotonic()
    n = run_bulk(
        producer, world, snapshots=args.snapshots, seed=args.seed,
        end_utc=datetime.now(UTC), rate=args.rate,
    )
    took = time.monotonic() - start
    print(f"published {n} snapshots over {args.entities} entities in {took:.1f}s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ground.serving_settings import load_serving_settings

    settings = _settings()
    load_serving_settings()  # auth settings are checked before the server starts
    # Its own /metrics, /healthz and /readyz are routes of the app (serving.observability).
    wait_until_reachable(_checks(settings, db=True, redis=True), backoff=Backoff(cap_s=settings.retry_max_s))
    uvicorn.run("serving.app:create_app", factory=True, host=args.host, port=args.port, log_config=None)
    return 0


def cmd_notifier(args: argparse.Namespace) -> int:
    from notifier.service import run_notifier

    settings = _settings()
    _start_service(settings, "notifier", kafka=True, db=True)
    return run_notifier(settings)


def cmd_demo(args: argparse.Namespace) -> int:
    from metricx.demo import run_demo

    settings = _settings()
    _check(settings, kafka=True, db=True, redis=True)
    return run_demo(settings, interval=args.interval, every=args.every, duration=args.duration,
                    seed=args.seed, port=args.port)


def cmd_status(args: argparse.Namespace) -> int:
    """Services, lag, last commit, stuck deliveries, connections needing re-auth; exit 1
    when something needs attention."""
    from ground.notifier_settings import load_notifier_settings
    from metricx.status import as_json, gather, parse_endpoints, problems, render

    settings = _settings()
    try:
        endpoints = parse_endpoints([*args.service, os.environ.get(STATUS_SERVICES_ENV, "")])
    except ValueError as exc:
        raise ConfigError(f"--service / {STATUS_SERVICES_ENV}: {exc}") from None
    report = gather(settings, endpoints=endpoints, notifier_group=load_notifier_settings().notifier_group_id,
                    stale_after_s=args.stale_after)
    issues = problems(report, stale_after_s=args.stale_after)
    print(as_json(report, issues) if args.json else render(report, issues))
    return 1 if issues else 0


def cmd_rules_sync(args: argparse.Namespace) -> int:
    """Republish every rule from the database to the rules topic (after restoring the
    database or the topic); ids only the topic knows get a tombstone.  Idempotent."""
    from serving.rules_store import RulePublisher, sync_all

    settings = _settings()
    _check(settings, kafka=True, db=True)
    result = sync_all(settings.libpq_url, RulePublisher(settings.kafka_bootstrap, settings.rules_topic,
                                                        timeout_s=30.0), prune=not args.no_prune)
    for rule_id, why in sorted(result.failed.items()):
        print(f"metricx: rule {rule_id} not published: {why[:500]}", file=sys.stderr)
    if result.failed:
        print(f"published {result.published} rules, {result.tombstoned} tombstones; "
              f"{len(result.failed)} rules not published (see above)")
        return 1
    print(f"published {result.published} rules, {result.tombstoned} tombstones")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metricx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("check", help="check that Kafka, PostgreSQL and Redis are reachable").set_defaults(func=cmd_check)

    p = sub.add_parser("status", help="services, lag, last commit, stuck deliveries, connections needing re-auth")
    p.add_argument("--service", action="append", default=[], metavar="NAME=URL",
                   help=f"a metricx process to ask for /readyz (repeatable; also {STATUS_SERVICES_ENV})")
    p.add_argument("--stale-after", type=float, default=120.0,
                   help="seconds without a commit (with messages waiting) or past due before it counts as stuck")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

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
    p.add_argument("--sim", action="store_true", help="poll the simulated ad platform (default: real connections)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_poller)

    from metricx.cli.connections import register as register_connections

    register_connections(sub)  # connections add|status|rotate-key|new-key, backfill

    p = sub.add_parser("rules", help="stop-loss rules")
    rules_sub = p.add_subparsers(dest="rules_command", required=True)
    p = rules_sub.add_parser("sync", help="republish every rule from the database to the rules topic")
    p.add_argument("--no-prune", action="store_true", help="do not tombstone ids missing from the database")
    p.set_defaults(func=cmd_rules_sync)

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

    from metricx.cli.token import register as register_token

    register_token(sub)  # token (development issuer)

    sub.add_parser("notifier", help="deliver alerts to Slack and email (outbox, exactly once)").set_defaults(
        func=cmd_notifier)

    p = sub.add_parser("demo", help="simulated accounts -> pipeline -> tables, with a live summary")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between simulated polls")
    p.add_argument("--every", type=float, default=10.0, help="seconds between summaries")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--port", type=int, default=8000, help="dashboard port")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, ConnectionError) as exc:
        print(f"metricx: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # e.g. Ctrl-C while a service waits for its dependencies
        return 130


if __name__ == "__main__":
    sys.exit(main())
