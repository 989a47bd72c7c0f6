"""``metricx topics``: create the topics of ``schemas.topics`` (the one list), grow an
existing one that has fewer partitions, align its configuration.  ``make topics`` and
``deploy/services.sh create-topics`` run this command."""

from __future__ import annotations

import argparse

from adapters.kafka import ensure_topics
from metricx.cli.common import require, settings_and_logs


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partitions", type=int, default=None,
                        help="partitions of the input topic (default: METRICX_RAW_PARTITIONS, 4)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    if args.partitions is not None and args.partitions < 1:
        print("metricx topics: --partitions must be >= 1", flush=True)
        return 2
    require(settings, kafka=True)
    specs = settings.kafka.topics(args.partitions)
    ensure_topics(settings.kafka.bootstrap, specs)
    print("topics ready: " + ", ".join(f"{s.name} ({s.partitions})" for s in specs))
    return 0
