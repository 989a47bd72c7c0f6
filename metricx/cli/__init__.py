"""``metricx`` — the single entry point every Makefile target calls.

The CLI is assembled here and nowhere else: one module per subcommand
(``metricx/cli/<command>.py``, each with ``register(parser)``), listed in
:data:`COMMANDS` with its one-line help.  Only the module of the command being run is
imported (``metricx pipeline`` never loads the web server, ``metricx token`` never loads
Bytewax), so every command starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ground.settings import ConfigError

COMMANDS: dict[str, str] = {
    "check": "check that Kafka, PostgreSQL and Redis are reachable",
    "status": "services, lag, last commit, stuck deliveries, connections needing re-auth",
    "migrate": "create or upgrade the database schema",
    "topics": "create the Kafka topics (or grow and align existing ones)",
    "pipeline": "run the insight dataflow (Bytewax, with recovery)",
    "poller": "poll ad platforms and publish snapshots",
    "connections": "ad-platform connections (tokens encrypted at rest)",
    "backfill": "read a connection's history (default 90 days, in chunks)",
    "rules": "stop-loss rules",
    "simulate": "publish N simulated snapshots (load and tests)",
    "serve": "run the HTTP server",
    "token": "print a development token (needs METRICX_DEV_ISSUER=1)",
    "notifier": "deliver alerts to Slack and email (outbox, exactly once)",
    "demo": "simulated accounts -> pipeline -> tables, with a live summary",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand with its help; ``command``'s module adds its own arguments."""
    parser = argparse.ArgumentParser(prog="metricx", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(f"metricx.cli.{name}").register(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_in if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(args_in)
    try:
        return int(args.func(args))
    except (ConfigError, ConnectionError) as exc:
        print(f"metricx: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # e.g. Ctrl-C while a service waits for its dependencies
        return 130
