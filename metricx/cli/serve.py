"""``metricx serve``: the HTTP server (``serving.app.create_app`` under uvicorn)."""

from __future__ import annotations

import argparse

from ground.retry import Backoff, wait_until_reachable
from metricx.cli.common import checks, settings_and_logs


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn  # the server's own dependency, loaded only to serve

    settings = settings_and_logs()
    settings.serving.require_key_source()  # auth settings are checked before the server starts
    # Its own /metrics, /healthz and /readyz are routes of the app (serving.observability).
    wait_until_reachable(checks(settings, db=True, redis=True), backoff=Backoff(cap_s=settings.retry_max_s))
    uvicorn.run("serving.app:create_app", factory=True, host=args.host, port=args.port, log_config=None)
    return 0
