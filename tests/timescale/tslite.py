"""Start the TimescaleDB-in-WASM test server (``deploy/timescale-lite``) from Python.

    with running_tslite() as dsn:
        psycopg.connect(dsn)

The server is a real TimescaleDB 2.23 (PGlite build with the TSL features) that
serves ONE connection at a time: close a connection before opening the next one
(a second concurrent client waits, then fails after 30 s). See
``deploy/timescale-lite/README.md`` for what it does and does not support.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_DIR = REPO_ROOT / "deploy" / "timescale-lite"
SERVER_SCRIPT = SERVER_DIR / "server.mjs"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
_READY = re.compile(r"^TSLITE READY port=(\d+)\b")


class TsliteError(RuntimeError):
    """The TimescaleDB-in-WASM server could not be started."""


def dsn_for(port: int) -> str:
    return f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres?sslmode=disable"


def _check_installed() -> str:
    node = shutil.which("node")
    if node is None:
        raise TsliteError(
            "`node` (Node.js >= 20) is not on PATH: it is needed to run the tslite server"
        )
    marker = SERVER_DIR / "node_modules" / "@unni-craftsman" / "pglite" / "package.json"
    if not marker.is_file():
        raise TsliteError(
            f"{SERVER_DIR / 'node_modules'} is missing or incomplete: run `make tslite-install` "
            f"(that is `npm ci --no-audit --no-fund` in {SERVER_DIR})"
        )
    return node


def _read_stderr(path: Path, limit: int = 20_000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:].strip() or "(empty)"


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_tslite(port: int | None = None) -> Iterator[str]:
    """Run ``node deploy/timescale-lite/server.mjs`` and yield its DSN.

    ``port=None`` lets the server bind a free port itself (port 0, no race) and
    reads the port back from its ready line. The server is stopped on exit.
    """
    node = _check_installed()
    env = dict(os.environ, TSLITE_EXIT_ON_STDIN_EOF="1")
    env.pop("TSLITE_PORT", None)
    with tempfile.TemporaryDirectory(prefix="tslite-") as tmp:
        stderr_path = Path(tmp) / "stderr.log"
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(
                [node, str(SERVER_SCRIPT), str(port if port is not None else 0)],
                cwd=SERVER_DIR,
                env=env,
                stdin=subprocess.PIPE,  # closed by our death: the server then exits too
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,  # Ctrl-C goes to pytest, which stops the server itself
            )
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(
            target=_pump, args=(proc, lines), name="tslite-stdout", daemon=True
        )
        reader.start()
        try:
            actual_port = _wait_ready(proc, lines, stderr_path)
            yield dsn_for(actual_port)
        finally:
            crashed = proc.poll()  # None while it runs, as it should until now
            _stop(proc)
            reader.join(timeout=5)
            if crashed is not None:
                print(
                    f"tslite server had died (exit code {crashed}): {_read_stderr(stderr_path)}",
                    file=sys.stderr,
                )
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Drain the server's stdout for its whole life (None marks its end)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)


def _wait_ready(
    proc: subprocess.Popen[str], lines: queue.Queue[str | None], stderr_path: Path
) -> int:
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _stop(proc)
            raise TsliteError(
                f"tslite server not ready after {READY_TIMEOUT_S:.0f} s.\n"
                f"stdout: {''.join(seen).strip() or '(empty)'}\n"
                f"stderr: {_read_stderr(stderr_path)}"
            )
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            code = proc.wait()
            raise TsliteError(
                f"tslite server exited with code {code} before it was ready.\n"
                f"stdout: {''.join(seen).strip() or '(empty)'}\n"
                f"stderr: {_read_stderr(stderr_path)}"
            )
        seen.append(line)
        match = _READY.match(line)
        if match:
            return int(match.group(1))
