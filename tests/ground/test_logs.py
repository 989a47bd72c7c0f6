"""JSON log lines: secrets scrubbed whatever the shape, library loggers handed over, and
the levels of what C code writes to stderr (pure, plus one subprocess for the C side)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from ground.logs import JsonFormatter, native_level, redact
from ground.settings import REPO_ROOT


@pytest.mark.parametrize(("text", "secret"), [
    ('"GET /v24.0/act_1/insights?access_token=EAAB1234567890abc&level=ad HTTP/1.1" 200', "EAAB1234567890abc"),
    ("grant_type=refresh_token&client_id=c.apps&client_secret=GOCSPX-abc123&refresh_token=1//0gXyz-12",
     "GOCSPX-abc123"),
    ("grant_type=refresh_token&refresh_token=1//0gXyz-12", "1//0gXyz-12"),
    ('Headers: {\n  "authorization": "Bearer ya29.a0AfB_byC",\n  "developer-token": "devTok123"\n}', "ya29.a0AfB_byC"),
    ('Headers: {\n  "developer-token": "devTok123"\n}', "devTok123"),
    ("{'access_token': 'ya29.zzz', 'expires_in': 3599}", "ya29.zzz"),
    ("token ya29.c.b0Aaek appears in an error", "ya29.c.b0Aaek"),
    ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
])
def test_secrets_are_scrubbed_in_any_shape(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out


def test_ordinary_text_is_left_alone() -> None:
    for text in ("meta poll done for act_123: 12 snapshots", "customer_id=1234567890", '"developer-token": "REDACTED"',
                 "GET /v24.0/act_1/insights?level=ad&limit=500", "1/2 of the days", "EAA"):
        assert redact(text) == text


def test_a_record_with_extras_and_an_exception_is_one_scrubbed_json_line() -> None:
    try:
        raise RuntimeError("refused token ya29.inTheException")
    except RuntimeError:
        rec = logging.LogRecord("google.ads.googleads.client", logging.WARNING, __file__, 1,
                                "Request made: %s", ("Bearer ya29.inTheMessage",), sys.exc_info())
    rec.url = "https://x/?access_token=EAAinTheExtra123"
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "inThe" not in line
    out = json.loads(line)
    assert (out["level"], out["logger"]) == ("warning", "google.ads.googleads.client")


def test_native_lines_get_levels_from_their_prefixes() -> None:
    assert native_level("I1206 15:27:01.196507 7023 ssl_transport_security.cc:2563] Handshake failed") == logging.INFO
    assert native_level("E1206 15:27:01.196507 7023 chttp2_transport.cc] x") == logging.ERROR
    assert native_level("%3|1796570170.161|FAIL|rdkafka#producer-1| Connect failed") == logging.ERROR
    assert native_level("%7|1796570170.161|DEBUG|rdkafka") == logging.DEBUG
    assert native_level("something printed") == logging.WARNING


def test_what_c_code_and_libraries_write_to_stderr_comes_out_as_json() -> None:
    """In a real process: a write to file descriptor 2 (as gRPC's core does), a print to
    sys.stderr, the google logger (which google-auth stops propagating), a warning, and
    an uncaught exception in a thread."""
    code = (
        "import logging, os, sys, threading, warnings\n"
        "from ground import logs\n"
        "logs.capture_native_stderr('INFO')\n"
        "from google.auth import _helpers\n"
        "_helpers.is_logging_enabled(logging.getLogger('google.auth'))\n"  # google-auth's own initialisation
        "os.write(2, b'E1206 15:27:01.196507 1 ssl.cc:1] Handshake failed Bearer ya29.native\\n')\n"
        "print('plain text on stderr', file=sys.stderr)\n"
        "logging.getLogger('google.ads.googleads.client').info('Request made: IsFault: False')\n"
        "warnings.warn('a library warning')\n"
        "t = threading.Thread(target=lambda: 1 / 0); t.start(); t.join()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    got = {(r["logger"], r["level"], r["msg"][:30]) for r in records}
    assert ("native.stderr", "error", "E1206 15:27:01.196507 1 ssl.cc") in got
    assert ("native.stderr", "warning", "plain text on stderr") in got
    assert ("google.ads.googleads.client", "info", "Request made: IsFault: False") in got
    assert any(r["logger"] == "py.warnings" for r in records)
    assert any(r["level"] == "critical" and "ZeroDivisionError" in r.get("exc", "") for r in records)
    assert "ya29.native" not in done.stderr
