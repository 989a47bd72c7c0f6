"""Secrets never reach the access log: uvicorn's access line prints the request target
with its query string, and ``/stream?token=...`` carries a stream token there (an
EventSource cannot send headers).  A filter on the ``uvicorn.access`` logger replaces
the value of every secret parameter before any handler sees the record."""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = ("token", "access_token", "id_token")
REDACTED = "[redacted]"
_SECRET = re.compile(r"(?i)(?<=[?&])(" + "|".join(SECRET_PARAMS) + r")=[^&#\s]*")


def redact_target(target: str) -> str:
    """``/stream?workspace_id=w&token=abc`` -> ``/stream?workspace_id=w&token=[redacted]``."""
    if "?" not in target:
        return target
    return _SECRET.sub(lambda m: f"{m.group(1)}={REDACTED}", target)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(redact_target(a) if isinstance(a, str) else a for a in args)
        elif isinstance(record.msg, str):
            record.msg = redact_target(record.msg)
        return True


def install(logger_name: str = "uvicorn.access") -> None:
    """Idempotent: one filter per logger, however many apps a process creates."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
