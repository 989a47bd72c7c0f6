"""``metricx connections add|status|rotate-key|new-key``: ad-platform connections.

Tokens are read as a JSON object from standard input, never from the command line
(arguments are visible to every user of the machine in ``ps``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg
from pydantic import ValidationError

from adapters import connections_store as store
from adapters.crypto import Keyring, TokenKeyError, generate_key
from domain.schedule import MAX_BACKFILL_DAYS
from metricx.cli.common import bounded, settings_and_logs
from pollers.status import status_rows


def register(parser: argparse.ArgumentParser) -> None:
    csub = parser.add_subparsers(dest="connections_command", required=True)
    a = csub.add_parser("add", help="add or reconnect an account; tokens as a JSON object on stdin")
    a.add_argument("--workspace", required=True)
    a.add_argument("--provider", required=True, choices=["meta", "google"])
    a.add_argument("--account-id", required=True, help="Meta ad account id (act_123 or 123) or Google customer id (123-456-7890 or 1234567890)")
    a.add_argument("--display-name", default="")
    a.add_argument("--login-customer-id", default=None, help="Google manager account id")
    a.add_argument("--backfill-days", type=bounded(1, MAX_BACKFILL_DAYS), default=None,
                   help="record a backfill of the N account days before today (run it with `metricx backfill`)")
    a.set_defaults(func=cmd_add)
    s = csub.add_parser("status", help="status, last error, progress and next runs (no tokens)")
    s.add_argument("--workspace", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    r = csub.add_parser("rotate-key", help="re-encrypt every token under METRICX_TOKEN_KEY_ID (old keys stay in "
                                           "METRICX_TOKEN_KEYS)")
    r.set_defaults(func=cmd_rotate)
    k = csub.add_parser("new-key", help="print a new random AES-256 key for METRICX_TOKEN_KEYS")
    k.set_defaults(func=cmd_new_key)


def cmd_add(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    raw = sys.stdin.read()
    try:
        tokens = json.loads(raw)
    except ValueError:
        print("metricx: tokens on stdin must be a JSON object (not echoed here)", file=sys.stderr)
        return 2
    try:
        new = store.NewConnection(workspace_id=args.workspace, provider=args.provider, account_id=args.account_id,
                                  display_name=args.display_name, login_customer_id=args.login_customer_id,
                                  tokens=tokens if isinstance(tokens, dict) else {})
        keys = Keyring.from_settings(settings.tokens)
    except ValidationError as err:
        print(f"metricx: invalid connection: {store.describe(err)}", file=sys.stderr)
        return 2
    except TokenKeyError as err:
        print(f"metricx: {err}", file=sys.stderr)
        return 2
    with psycopg.connect(settings.database.libpq_url, autocommit=True) as conn:
        store.add(conn, keys, new)
        if args.backfill_days:
            # A count of the account's own days: its zone is known once it is first read.
            store.request_backfill(conn, str(new.workspace_id), new.provider, new.account_id, args.backfill_days)
    print(f"connection {new.provider}:{new.account_id} saved for workspace {new.workspace_id} (key {keys.active})")
    note = store.credential_note(new)
    if note:
        print(f"metricx: warning: {note}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    with psycopg.connect(settings.database.libpq_url) as conn:
        rows = status_rows(conn, args.workspace)
    if args.json:
        print(json.dumps(rows, default=str, indent=1))
        return 0
    cols = ("workspace_id", "provider", "account_id", "display_name", "status", "freshness", "timezone", "currency",
            "last_success_at", "hot_next_run_at", "warm_next_run_at", "backfill", "api_calls_today",
            "last_error", "credential_note")
    print("\t".join(cols))
    for r in rows:
        r = {**r, "backfill": backfill_text(r)}
        print("\t".join("" if r[c] is None else str(r[c]) for c in cols))
    return 0


def backfill_text(r: dict[str, Any]) -> str | None:
    """``37% of 2026-01-01..2026-03-31, 1234 rows, ETA 2026-...`` / ``5 days requested``."""
    if r["backfill_pct"] is not None:
        eta = "" if r["backfill_pct"] >= 100 or r["backfill_eta"] is None else f", ETA {r['backfill_eta']:%Y-%m-%d %H:%M:%S%z}"
        return f"{r['backfill_pct']}% of {r['backfill_from']}..{r['backfill_until']}, {r['backfill_rows']} rows{eta}"
    if r["backfill_days"] is not None:
        return f"{r['backfill_days']} days requested"
    return None


def cmd_rotate(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    try:
        keys = Keyring.from_settings(settings.tokens)
    except TokenKeyError as err:
        print(f"metricx: {err}", file=sys.stderr)
        return 2
    with psycopg.connect(settings.database.libpq_url) as conn:  # one transaction: all rows move or none
        n = store.reencrypt_all(conn, keys)
    print(f"re-encrypted {n} connection tokens under key {keys.active}")
    return 0


def cmd_new_key(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0
