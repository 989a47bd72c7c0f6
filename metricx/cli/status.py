"""``metricx status``: services, lag, last commit, stuck deliveries, connections needing
re-auth (``metricx.status``); exit 1 when something needs attention."""

from __future__ import annotations

import argparse

from ground.settings import ConfigError
from metricx.cli.common import settings_and_logs
from metricx.status import as_json, gather, parse_endpoints, problems, render


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", action="append", default=[], metavar="NAME=URL",
                        help="a metricx process to ask for /readyz (repeatable; also METRICX_STATUS_SERVICES)")
    parser.add_argument("--stale-after", type=float, default=120.0,
                        help="seconds without a commit (with messages waiting) or past due before it counts as stuck")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    try:
        endpoints = parse_endpoints([*args.service, settings.metrics.status_services])
    except ValueError as exc:
        raise ConfigError(f"--service / METRICX_STATUS_SERVICES: {exc}") from None
    report = gather(settings, endpoints=endpoints, notifier_group=settings.notifier.notifier_group_id,
                    stale_after_s=args.stale_after)
    issues = problems(report, stale_after_s=args.stale_after)
    print(as_json(report, issues) if args.json else render(report, issues))
    return 1 if issues else 0
