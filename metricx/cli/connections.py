"""``metricx connections add|status|rotate-key|new-key``, ``metricx backfill`` and the real
poller service (``metricx poller`` without ``--sim``).  Registered by ``metricx/cli.py``.

Tokens are read as a JSON object from standard input, never from the command line
(arguments are visible to every user of the machine in ``ps``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from adapters.crypto import ACTIVE_ENV, KEYS_ENV, Keyring, TokenKeyError, generate_key
from domain.backfill_progress import BackfillProgress, bar
from domain.schedule import MAX_BACKFILL_DAYS
from ground.poller_settings import load_poller_settings
from schemas.accounts import canonical_account_id


def _db_url() -> str:
    from metricx.cli import _settings

    return _settings().libpq_url


def cmd_add(args: argparse.Namespace) -> int:
    import psycopg

    from adapters import connections_store as store

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
        keys = Keyring.from_env()
    except ValidationError as err:
        print(f"metricx: invalid connection: {store.describe(err)}", file=sys.stderr)
        return 2
    except TokenKeyError as err:
        print(f"metricx: {err}", file=sys.stderr)
        return 2
    with psycopg.connect(_db_url(), autocommit=True) as conn:
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
    import psycopg

    from adapters import connections_store as store

    with psycopg.connect(_db_url()) as conn:
        rows = store.status_rows(conn, args.workspace)
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
    import psycopg

    from adapters import connections_store as store

    try:
        keys = Keyring.from_env()
    except TokenKeyError as err:
        print(f"metricx: {err}", file=sys.stderr)
        return 2
    with psycopg.connect(_db_url()) as conn:  # one transaction: all rows move or none
        n = store.reencrypt_all(conn, keys)
    print(f"re-encrypted {n} connection tokens under key {keys.active}")
    return 0


def cmd_new_key(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


def _syncer(settings: Any) -> Any:
    import redis

    from adapters.google_ads.budget import RedisOperationBudget
    from adapters.kafka import Producer
    from pollers.sync import Endpoints, Syncer

    ps = load_poller_settings()
    endpoints = Endpoints(meta_graph_url=ps.meta_graph_url, google_endpoint=ps.google_ads_endpoint,
                          google_token_url=ps.google_oauth_token_url,
                          google_ca_file=str(ps.google_ads_ca_file) if ps.google_ads_ca_file else None)
    client = redis.Redis.from_url(settings.redis_url)
    limit = ps.google_daily_operations
    return Syncer(settings.libpq_url, Keyring.from_env(), Producer(settings.kafka_bootstrap, client_id="metricx-poller"),
                  client, endpoints, topic=settings.raw_topic, deadletter_topic=settings.deadletter_topic,
                  google_budget_for=lambda token: RedisOperationBudget(client, token, limit),
                  hot_yesterday_hours=ps.hot_yesterday_hours)


def cmd_backfill(args: argparse.Namespace) -> int:
    import psycopg

    from adapters import connections_store as store
    from metricx.cli import _check, _settings

    settings = _settings()
    try:
        workspace = str(UUID(args.workspace))
        account_id = canonical_account_id(args.provider, args.account_id)
    except ValueError as err:
        print(f"metricx: {err}", file=sys.stderr)
        return 2
    _check(settings, kafka=True, db=True, redis=True)
    try:
        syncer = _syncer(settings)
    except TokenKeyError as err:
        print(f"metricx: {err}", file=sys.stderr)
        return 2
    with psycopg.connect(settings.libpq_url, autocommit=True) as conn:
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

    run = syncer.backfill(c, days=args.days, chunk_days=args.chunk_days, on_progress=show)
    if tty:
        print()
    chunks = [o for o in run.outcomes if o.loop == "backfill"]
    calls = sum(o.api_calls for o in run.outcomes)
    snaps, rejected = sum(o.snapshots for o in chunks), sum(o.rejected for o in chunks)
    if run.window is None:
        print(f"{label}: could not read the account ({run.outcomes[0].status}): {run.outcomes[0].message}")
        return 1
    w = run.window
    resumed = f", resumed after {run.resumed_after}" if run.resumed_after is not None else ""
    verb = "read" if run.ok else "stopped reading"
    print(f"{label} {verb} {w.since}..{w.until} ({w.days} days{resumed}): {snaps} snapshots, "
          f"{rejected} rejected, {calls} API calls")
    failed = next((o for o in run.outcomes if o.status != "ok"), None)
    if failed is not None:
        print(f"{label}: {failed.status}: {failed.message} (run it again to resume)", file=sys.stderr)
        return 1
    return 0


def run_pollers(settings: Any, tick_s: float) -> int:
    """The real poller service: both loops for every due connection, until SIGINT/SIGTERM.
    Its stderr is JSON lines only, whatever writes there (see ``ground.logs``)."""
    from ground import logs
    from metricx.cli import _start_service

    logs.capture_native_stderr(settings.log_level)
    _start_service(settings, "poller", kafka=True, db=True, redis=True)
    try:
        syncer = _syncer(settings)
    except TokenKeyError as err:
        print(f"metricx: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    syncer.serve(stop, tick_s)
    return 0


def _bounded(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:20]!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}")
        return n
    return parse


_days = _bounded(1, MAX_BACKFILL_DAYS)
_chunk_days = _bounded(1, 90)


def register(sub: Any) -> None:
    p = sub.add_parser("connections", help="ad-platform connections (tokens encrypted at rest)")
    csub = p.add_subparsers(dest="connections_command", required=True)
    a = csub.add_parser("add", help="add or reconnect an account; tokens as a JSON object on stdin")
    a.add_argument("--workspace", required=True)
    a.add_argument("--provider", required=True, choices=["meta", "google"])
    a.add_argument("--account-id", required=True, help="Meta ad account id (act_123 or 123) or Google customer id (123-456-7890 or 1234567890)")
    a.add_argument("--display-name", default="")
    a.add_argument("--login-customer-id", default=None, help="Google manager account id")
    a.add_argument("--backfill-days", type=_days, default=None,
                   help="record a backfill of the N account days before today (run it with `metricx backfill`)")
    a.set_defaults(func=cmd_add)
    s = csub.add_parser("status", help="status, last error, progress and next runs (no tokens)")
    s.add_argument("--workspace", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    r = csub.add_parser("rotate-key", help=f"re-encrypt every token under {ACTIVE_ENV} (old keys stay in {KEYS_ENV})")
    r.set_defaults(func=cmd_rotate)
    k = csub.add_parser("new-key", help=f"print a new random AES-256 key for {KEYS_ENV}")
    k.set_defaults(func=cmd_new_key)

    b = sub.add_parser("backfill", help="read a connection's history (default 90 days, in chunks)")
    b.add_argument("--workspace", required=True)
    b.add_argument("--provider", required=True, choices=["meta", "google"])
    b.add_argument("--account-id", required=True)
    b.add_argument("--days", type=_days, default=None,
                   help="the N account days before today (default: what `connections add --backfill-days` "
                        "asked for, else an unfinished range, else 90)")
    b.add_argument("--chunk-days", type=_chunk_days, default=7, help="days per read (1..90)")
    b.set_defaults(func=cmd_backfill)
