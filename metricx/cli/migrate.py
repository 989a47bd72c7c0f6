"""``metricx migrate``: create or upgrade the schema (its flavour is chosen once)."""

from __future__ import annotations

import argparse

from metricx.cli.common import require, settings_and_logs
from schemas.migrate import upgrade


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timescaledb", choices=["auto", "on", "off"], default=None)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    require(settings, db=True)
    flavor = upgrade(settings.database.sqlalchemy_url, args.timescaledb or settings.database.timescaledb)
    print(f"schema is up to date ({flavor})")
    return 0
