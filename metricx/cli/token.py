"""``metricx token``: mint a development token (refused unless METRICX_DEV_ISSUER=1).

``--grant ROLE`` also records the user, the workspace and the membership, so a fresh
demo database can be opened at once; without it the token is only printed (and the API
refuses it until a membership exists).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg

from metricx.cli.common import require, settings_and_logs
from serving.dev_issuer import load_or_create_key, mint

GRANT_SQL = """
WITH u AS (
  INSERT INTO users (sub) VALUES (%(sub)s) ON CONFLICT (sub) DO UPDATE SET sub = EXCLUDED.sub RETURNING id
), w AS (
  INSERT INTO workspaces (id, name, timezone) VALUES (%(ws)s, %(name)s, %(tz)s)
  ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id RETURNING id
)
INSERT INTO memberships (user_id, workspace_id, role) SELECT u.id, w.id, %(role)s FROM u, w
ON CONFLICT (user_id, workspace_id) DO UPDATE SET role = EXCLUDED.role
"""


def run(args: argparse.Namespace) -> int:
    settings = settings_and_logs()
    serving = settings.serving
    if not serving.dev_issuer:
        print("metricx token: refused: the development issuer is disabled (set METRICX_DEV_ISSUER=1; "
              "never in production)", file=sys.stderr)
        return 2
    try:
        ws = uuid.UUID(args.workspace)
    except ValueError:
        print(f"metricx token: --workspace must be a UUID, got {args.workspace!r}", file=sys.stderr)
        return 2
    if not args.user or len(args.user) > 255:
        print("metricx token: --user must be 1-255 characters", file=sys.stderr)
        return 2
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        print(f"metricx token: --timezone: unknown IANA zone {args.timezone!r}", file=sys.stderr)
        return 2
    if args.grant:
        require(settings, db=True)
        with psycopg.connect(settings.database.libpq_url) as conn:
            conn.execute(GRANT_SQL, {"sub": args.user, "ws": ws, "name": args.name, "tz": args.timezone,
                                     "role": args.grant})
    key = load_or_create_key(settings.dev_issuer_dir, serving.auth_algorithm)
    print(mint(key, serving.auth_algorithm, issuer=serving.auth_issuer, audience=serving.auth_audience,
               sub=args.user, workspace_id=str(ws), ttl_s=args.ttl))
    return 0


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="the token's sub (user id)")
    p.add_argument("--workspace", required=True, help="workspace UUID (the token's default workspace)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires")
    p.add_argument("--grant", choices=["owner", "admin", "viewer"], default=None,
                   help="also create the user/workspace and this membership in the database")
    p.add_argument("--name", default="Demo workspace", help="workspace name (with --grant, when created)")
    p.add_argument("--timezone", default="UTC", help="workspace IANA timezone (with --grant, when created)")
    p.set_defaults(func=run)

