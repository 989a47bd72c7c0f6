"""``metricx notifier``: consume ``metricx.alerts`` and deliver to Slack and email, until
SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

from ground.stopping import stop_on_signals
from metricx.cli.common import settings_and_logs, start_service
from notifier.service import run_notifier


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    start_service(settings, "notifier", kafka=True, db=True)
    return run_notifier(settings, stop_on_signals())
