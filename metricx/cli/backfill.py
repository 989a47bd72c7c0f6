"""``metricx backfill``: read a connection's history in chunks, with a progress bar, and
say what was read."""

from __future__ import annotations

import argparse
import sys
from uuid import UUID

import psycopg

from adapters import connections_store as store
from adapters.crypto import TokenKeyError
from domain.backfill_progress import BackfillProgress, bar
from domain.schedule import MAX_BACKFILL_DAYS
from metricx.cli.common import bounded, require, settings_and_logs
from pollers.service import build_syncer
from schemas.accounts import canonical_account_id


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--provider", required=True, choices=["meta", "google"])
    parser.add_argument("--account-id", required=True)
    parser.add_argument("--days", type=bounded(1, MAX_BACKFILL_DAYS), default=None,
                        help="the N account days before today (default: what `connections add --backfill-days` "
                             "asked for, else an unfinished range, else 90)")
    parser.add_argument("--chunk-days", type=bounded(1, 90), default=7, help="days per read (1..90)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    try:
        workspace = str(UUID(args.workspace))
        account_id = canonical_account_id(args.provider, args.account_id)
    except ValueError as err:
        print(f"metricx: {err}", file=sys.stderr)
        return 2
    require(settings, kafka=True, db=True, redis=True)
    try:
        syncer = build_syncer(settings)
    except TokenKeyError as err:
        print(f"metricx: {err}", file=sys.stderr)
        return 2
    with psycopg.connect(settings.database.libpq_url, autocommit=True) as conn:
        c = store.get(conn, syncer.keys, workspace, args.provider, account_id)
    if c is None:
        print(f"metricx: no {args.provider} connection {account_id} in workspace {workspace}", file=sys.stderr)
        return 2
    label = f"{c.provider}:{c.account_id}"
    tty = sys.stdout.isatty()

    def show(p: BackfillProgress) -> None:
        # Standard output (standard error carries the JSON log lines): on a terminal one
        # line redrawn in place, else one line per chunk.
        line = bar(label, p, syncer.clock())
        print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)

    result = syncer.backfill(c, days=args.days, chunk_days=args.chunk_days, on_progress=show)
    if tty:
        print()
    chunks = [o for o in result.outcomes if o.loop == "backfill"]
    calls = sum(o.api_calls for o in result.outcomes)
    snaps, rejected = sum(o.snapshots for o in chunks), sum(o.rejected for o in chunks)
    if result.window is None:
        print(f"{label}: could not read the account ({result.outcomes[0].status}): {result.outcomes[0].message}")
        return 1
    w = result.window
    resumed = f", resumed after {result.resumed_after}" if result.resumed_after is not None else ""
    verb = "read" if result.ok else "stopped reading"
    print(f"{label} {verb} {w.since}..{w.until} ({w.days} days{resumed}): {snaps} snapshots, "
          f"{rejected} rejected, {calls} API calls")
    failed = next((o for o in result.outcomes if o.status != "ok"), None)
    if failed is not None:
        print(f"{label}: {failed.status}: {failed.message} (run it again to resume)", file=sys.stderr)
        return 1
    return 0
