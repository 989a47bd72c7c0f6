"""``metricx demo``: simulated accounts -> pipeline -> tables -> dashboard (``metricx.demo``)."""

from __future__ import annotations

import argparse

from metricx.cli.common import require, settings_and_logs
from metricx.demo import run_demo


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between simulated polls")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between summaries")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=8000, help="dashboard port")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    require(settings, kafka=True, db=True, redis=True)
    return run_demo(settings, interval=args.interval, every=args.every, duration=args.duration, seed=args.seed,
                    port=args.port)
