"""``metricx poller``: the real pollers (every connection's hot and warm loops), or with
``--sim`` the simulated ad platform; both until SIGINT/SIGTERM.

The real pollers' standard error is JSON lines only, whatever writes there (see
``ground.logs``)."""

from __future__ import annotations

import argparse
import logging
import sys

from adapters.crypto import TokenKeyError
from adapters.kafka import Producer
from domain.sim.world import build_world
from ground import logs
from ground.stopping import stop_on_signals
from metricx.cli.common import settings_and_logs, start_service
from pollers.service import build_syncer
from pollers.sim import run_live

log = logging.getLogger("metricx")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", action="store_true", help="poll the simulated ad platform (default: real connections)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--seed", type=int, default=1)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    if not args.sim:
        logs.capture_native_stderr(settings.log_level)
        start_service(settings, "poller", kafka=True, db=True, redis=True)
        try:
            syncer = build_syncer(settings)
        except TokenKeyError as err:
            print(f"metricx: {err}", file=sys.stderr)
            return 2
        syncer.serve(stop_on_signals(), args.interval)
        return 0
    start_service(settings, "poller", kafka=True)
    # No delivery deadline: a broker restart delays polls, it does not stop the poller.
    producer = Producer(settings.kafka.bootstrap, client_id="metricx-sim-poller", extra={"message.timeout.ms": 0})
    # Each poll is flushed before the loop looks at the flag again: every published
    # snapshot is delivered, whichever signal (and however many) stopped it.
    run_live(producer, build_world(args.seed), interval_s=args.interval, seed=args.seed, stop=stop_on_signals(),
             topic=settings.kafka.raw_topic)
    producer.flush()
    log.info("poller stopped; every published snapshot was delivered")
    return 0
