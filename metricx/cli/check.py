"""``metricx check``: are Kafka, PostgreSQL and Redis reachable?"""

from __future__ import annotations

import argparse

from metricx.cli.common import require, settings_and_logs


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    require(settings, kafka=True, db=True, redis=True)
    print("kafka, postgresql and redis are reachable")
    return 0
