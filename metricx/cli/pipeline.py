"""``metricx pipeline``: the insight dataflow, until SIGINT/SIGTERM (a second one stops
at once; the next start then replays the open epoch)."""

from __future__ import annotations

import argparse
import logging

from ground.stopping import interrupted, stop_on_signals
from metricx.cli.common import settings_and_logs, start_service
from pipelines.run import run_pipeline

log = logging.getLogger("metricx")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-w", "--workers", type=int, default=1, help="worker threads in this process")
    parser.add_argument("-i", "--process-id", type=int, default=None, help="this process's index in a cluster")
    parser.add_argument("-a", "--addresses", default=None, help="host:port of every process, ';'-separated")
    parser.add_argument("--no-recovery", action="store_true", help="run without state snapshots (re-reads the topic)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    start_service(settings, "pipeline", port_offset=args.process_id or 0, kafka=True, db=True, redis=True)
    stop = stop_on_signals(second_interrupts=True, on_stop=lambda name: log.info(
        "stopping: ending the input, committing the last epoch", extra={"signal": name}))
    addresses = args.addresses.split(";") if args.addresses else None
    try:
        run_pipeline(settings, stop=stop, workers=args.workers, process_id=args.process_id, addresses=addresses,
                     recovery=not args.no_recovery)
    except (KeyboardInterrupt, Exception) as exc:
        if not interrupted(exc):
            raise
        log.info("pipeline stopped by interrupt; the next start resumes from its last snapshot")
    return 0
