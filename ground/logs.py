"""Structured logging: one JSON object per line, with whatever context the call adds
(``extra={"workspace_id": ..., "topic": ..., "offset": ...}``).

Every line is JSON whatever library wrote it, and carries no token:

* Python loggers of libraries (``google`` of the google-ads SDK, google-auth and
  api-core, ``urllib3``, ``grpc``, ``facebook_business`` ...) go through the one JSON
  handler at the configured level.  The ``google`` logger is given that level
  explicitly: google-auth and api-core otherwise mark it "not configured" and stop it
  propagating, and its warnings reached stderr as plain text through ``lastResort``.
* ``warnings`` go through logging; ``lastResort`` is the JSON handler too.
* With :func:`capture_native_stderr` (the pollers), what C code writes to file
  descriptor 2 (gRPC's core, librdkafka) is read back and wrapped line by line.
* :func:`redact` scrubs secrets from every line: bearer tokens, ``access_token=``
  style parameters, ``authorization`` / ``developer-token`` header values and the
  shapes of Google and Meta tokens.  The SDKs log request URLs and headers at DEBUG.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import json
import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}

# Library loggers handed to the root handler (any other existing logger with its own
# console handler is handed over too, see configure()).
LIBRARY_LOGGERS = ("google", "grpc", "urllib3", "requests", "facebook_business", "confluent_kafka", "py.warnings")

_SECRET_KEYS = r"access_token|refresh_token|client_secret|appsecret_proof|id_token|fb_exchange_token|developer[-_]token"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # key=value in URLs and form bodies: ?access_token=EAA...&...
    (re.compile(rf"(?i)\b({_SECRET_KEYS})=[^&\s\"',;\\]+"), r"\1=***"),
    # "key": "value" / 'key': 'value' in JSON and dict reprs (headers, bodies)
    (re.compile(rf"(?i)([\"']?)\b(authorization|{_SECRET_KEYS}|x-goog-api-key)\1(\s*[:=]\s*)([\"'])(?!REDACTED)[^\"']*\4"),
     r"\1\2\1\3\4***\4"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer ***"),
    # Token shapes: Google access (ya29.) and refresh (1//) tokens, OAuth client secrets
    # (GOCSPX-), Meta access tokens (EAA...).
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), "ya29.***"),
    (re.compile(r"(?<![A-Za-z0-9/])1//[A-Za-z0-9._-]+"), "1//***"),
    (re.compile(r"\bGOCSPX-[A-Za-z0-9._-]+"), "GOCSPX-***"),
    (re.compile(r"\bEAA[A-Za-z0-9]{8,}"), "EAA***"),
)
MAX_NATIVE_LINE = 16_384


def redact(text: str) -> str:
    """``text`` with secrets replaced by ``***`` (patterns, never a list of known values:
    a library may log a token we never saw)."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        out.update((k, _scrub(v)) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=lambda o: redact(str(o)))


_stream: IO[str] | None = None  # where the JSON lines go (stderr, or its original fd when captured)
_handler: logging.Handler | None = None


def configure(level: str = "INFO") -> None:
    global _handler
    handler = logging.StreamHandler(_stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    _handler = handler
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.lastResort = handler  # a logger left without handlers still writes JSON
    logging.captureWarnings(True)
    names = set(LIBRARY_LOGGERS) | {n for n, lg in logging.root.manager.loggerDict.items()
                                    if isinstance(lg, logging.Logger) and _console_handlers(lg)}
    for name in names:
        lg = logging.getLogger(name)
        for h in _console_handlers(lg):
            lg.removeHandler(h)
        lg.propagate = True
        lg.setLevel(logging.NOTSET)
    # "Configured" in google-auth's and api-core's sense (a level set), so they leave it
    # propagating; at the root's level, as every other logger.
    logging.getLogger("google").setLevel(root.level)
    logging.getLogger("alembic.runtime.migration").setLevel(max(logging.WARNING, root.level))
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


def _console_handlers(lg: logging.Logger) -> list[logging.Handler]:
    """Handlers writing plain text to the console (set up by a library), never ours."""
    return [h for h in lg.handlers if isinstance(h, logging.StreamHandler) and h is not _handler
            and not isinstance(h, logging.FileHandler)]


def _log_uncaught(t: type[BaseException], e: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("metricx").critical("uncaught exception", exc_info=(t, e, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("metricx").critical(
        "uncaught exception in a thread", extra={"thread_name": args.thread.name if args.thread else None},
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback))


_ABSL = re.compile(r"^([IWEFD])\d{4} ")  # gRPC core (absl): I1206 15:27:01.196507 ...
_RDKAFKA = re.compile(r"^%([0-7])\|")  # librdkafka: %3|1796570170.161|FAIL|...
_ABSL_LEVEL = {"D": logging.DEBUG, "I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_SYSLOG_LEVEL = [logging.CRITICAL] * 3 + [logging.ERROR, logging.WARNING, logging.INFO, logging.INFO, logging.DEBUG]
NATIVE_LOGGER = "native.stderr"


def native_level(line: str) -> int:
    """The level of a line C code wrote to stderr, from gRPC's and librdkafka's prefixes
    (anything else: a warning, it was not meant to be there)."""
    if m := _ABSL.match(line):
        return _ABSL_LEVEL[m.group(1)]
    if k := _RDKAFKA.match(line):
        return _SYSLOG_LEVEL[int(k.group(1))]
    return logging.WARNING


class _NativeStderr:
    """File descriptor 2 replaced by a pipe; a thread logs each line it carries (logger
    ``native.stderr``) through the JSON handler, which writes to the original stderr."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self.orig_fd = os.dup(2)
        self.out = os.fdopen(os.dup(self.orig_fd), "w", buffering=1, encoding="utf-8", errors="replace")
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self.log = logging.getLogger(NATIVE_LOGGER)
        self.thread = threading.Thread(target=self._pump, args=(r,), name="metricx-stderr-json", daemon=True)

    def start(self) -> None:
        self.thread.start()
        # A fatal crash's dump goes straight to the original stderr (the pump dies with it).
        faulthandler.enable(file=self.out)
        atexit.register(self.close)

    def _pump(self, r: int) -> None:
        with os.fdopen(r, "rb") as f:
            while chunk := f.readline(MAX_NATIVE_LINE):
                line = chunk.decode("utf-8", "replace").rstrip("\r\n")
                if line.strip():
                    self.log.log(native_level(line), line)

    def close(self) -> None:
        """Put the original stderr back; the pipe's write end closes, the pump drains it."""
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(self.orig_fd, 2)
        self.thread.join(timeout=5)


_native: _NativeStderr | None = None


def capture_native_stderr(level: str = "INFO") -> None:
    """Make every line on stderr JSON, including what C code (gRPC core, librdkafka)
    and ``print(file=sys.stderr)`` write to file descriptor 2; then (re)configure logging
    onto the original stderr."""
    global _native, _stream
    if _native is not None:
        configure(level)
        return
    _native = _NativeStderr()
    _stream = _native.out
    # A failing handler must not print its traceback to stderr: it would come back here.
    logging.raiseExceptions = False
    configure(level)  # the handler writes to the original stderr before the pump starts
    _native.start()
