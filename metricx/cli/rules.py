"""``metricx rules sync``: republish every rule from the database to the rules topic
(after restoring the database or the topic); ids only the topic knows get a tombstone.
Idempotent."""

from __future__ import annotations

import argparse
import sys

from metricx.cli.common import require, settings_and_logs
from serving.rules_store import RulePublisher, sync_all


def register(parser: argparse.ArgumentParser) -> None:
    rules_sub = parser.add_subparsers(dest="rules_command", required=True)
    p = rules_sub.add_parser("sync", help="republish every rule from the database to the rules topic")
    p.add_argument("--no-prune", action="store_true", help="do not tombstone ids missing from the database")
    p.set_defaults(func=run_sync)


def run_sync(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    require(settings, kafka=True, db=True)
    publisher = RulePublisher(settings.kafka.bootstrap, settings.kafka.rules_topic, timeout_s=30.0)
    result = sync_all(settings.database.libpq_url, publisher, prune=not args.no_prune)
    for rule_id, why in sorted(result.failed.items()):
        print(f"metricx: rule {rule_id} not published: {why[:500]}", file=sys.stderr)
    if result.failed:
        print(f"published {result.published} rules, {result.tombstoned} tombstones; "
              f"{len(result.failed)} rules not published (see above)")
        return 1
    print(f"published {result.published} rules, {result.tombstoned} tombstones")
    return 0
