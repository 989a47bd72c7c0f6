"""``metricx simulate``: publish a fixed number of simulated snapshots as fast as
possible (or at a rate), for load and tests."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from adapters.kafka import Producer
from domain.sim.world import build_world_for_entities
from metricx.cli.common import require, settings_and_logs
from pollers.sim import run_bulk


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--snapshots", type=int, default=100_000)
    parser.add_argument("--entities", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=None, help="messages per second (default: as fast as possible)")
    parser.add_argument("--seed", type=int, default=1)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    require(settings, kafka=True)
    producer = Producer(settings.kafka.bootstrap, client_id="metricx-sim-bulk")
    world = build_world_for_entities(args.seed, args.entities)
    start = time.monotonic()
    n = run_bulk(producer, world, snapshots=args.snapshots, seed=args.seed, end_utc=datetime.now(UTC),
                 rate=args.rate, topic=settings.kafka.raw_topic)
    took = time.monotonic() - start
    print(f"published {n} snapshots over {args.entities} entities in {took:.1f}s")
    return 0
