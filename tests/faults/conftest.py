"""The fault suite's own Kafka, PostgreSQL and Redis, and the real metricx processes.

The suite restarts and stops services, so it never touches the ones the rest of the
suite uses: ``deploy/services.sh`` starts a second set on free ports with a data folder
of its own (the Kafka jars are shared), and stops it at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.kafka import Producer, encode_snapshot, flush_until_delivered
from ground.settings import REPO_ROOT, DatabaseSettings, KafkaSettings, RedisSettings, Settings, load_settings
from schemas.insight import Snapshot

SERVICES_SH = REPO_ROOT / "deploy" / "services.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FaultServices:
    """A private Kafka / PostgreSQL / Redis; ``run("restart", "kafka")`` and friends."""

    env: dict[str, str]
    settings: Settings

    def run(self, action: str, service: str) -> None:
        out = subprocess.run(["bash", str(SERVICES_SH), action, service], env=self.env, capture_output=True,
                             text=True, timeout=300)
        if out.returncode != 0:
            raise AssertionError(f"services.sh {action} {service} failed:\n{out.stdout}\n{out.stderr}")


@pytest.fixture(scope="session")
def fault_services() -> Iterator[FaultServices]:
    # Not under pytest's temporary folder: PostgreSQL runs as the postgres user, and every
    # pytest session (another worktree's, say) makes /tmp/pytest-of-<user> private again.
    # Beside the main data folder instead, whose parents services.sh made traversable.
    data = load_settings().data_dir / "fault-services"
    kafka, controller, pg, rd = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "METRICX_DATA_DIR": str(data), "KAFKA_PORT": str(kafka),
           "KAFKA_CONTROLLER_PORT": str(controller), "POSTGRES_PORT": str(pg), "REDIS_PORT": str(rd),
           "METRICX_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
           "METRICX_DATABASE_URL": f"postgresql://metricx:metricx@127.0.0.1:{pg}/metricx",
           "METRICX_REDIS_URL": f"redis://127.0.0.1:{rd}/0"}
    libs = load_settings().data_dir / "kafka" / "libs"
    if (libs / ".fetched").exists():
        env["METRICX_KAFKA_LIBS"] = str(libs)  # the jars `make test` already fetched
    settings = Settings(kafka=KafkaSettings(bootstrap=env["METRICX_KAFKA_BOOTSTRAP"]),
                        database=DatabaseSettings(url=env["METRICX_DATABASE_URL"]),
                        redis=RedisSettings(url=env["METRICX_REDIS_URL"]), data_dir=data / "metricx")
    services = FaultServices(env, settings)
    if data.exists():  # a previous run that could not clean up: its services on other ports
        _down_all(data)
        shutil.rmtree(data)
    up = subprocess.run(["bash", str(SERVICES_SH), "up"], env=env, capture_output=True, text=True, timeout=600)
    try:
        if up.returncode != 0:
            pytest.fail(f"the fault suite's services did not start:\n{up.stdout}\n{up.stderr}")
        yield services
    finally:
        subprocess.run(["bash", str(SERVICES_SH), "down"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(data, ignore_errors=True)


def _down_all(data: Path) -> None:
    """Stop what a killed run left in ``data``, whatever ports it had (read back from its
    config files), so the folder can go."""
    env = {**os.environ, "METRICX_DATA_DIR": str(data)}
    conf = data / "postgres" / "metricx.conf"
    if conf.exists():
        for line in conf.read_text().splitlines():
            if line.startswith("port = "):
                env["POSTGRES_PORT"] = line.split("=", 1)[1].strip()
    props = data / "kafka" / "server.properties"
    if props.exists():
        for line in props.read_text().splitlines():
            if line.startswith("listeners="):
                ports = [p.rsplit(":", 1)[1] for p in line.split("=", 1)[1].split(",")]
                env["KAFKA_PORT"], env["KAFKA_CONTROLLER_PORT"] = ports[0], ports[1]
    # Redis is stopped by its pid file; a port nobody listens on keeps `redis-cli shutdown`
    # from reaching someone else's Redis.
    env["REDIS_PORT"] = str(free_port())
    subprocess.run(["bash", str(SERVICES_SH), "down"], env=env, capture_output=True, timeout=300)


class Proc:
    """A metricx command as an OS process (so it can be killed -9), restartable."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env, self.log_dir = name, args, env, log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        with open(self.log_path(self.runs), "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "metricx.cli", *self.args], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def log_path(self, run: int) -> Path:
        return self.log_dir / f"{self.name}-{run}.log"

    def log(self, run: int | None = None) -> str:
        return self.log_path(run or self.runs).read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def assert_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_events(self, run: int | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log(run).splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


def wait_for(cond: Callable[[], bool], what: str, timeout_s: float = 180.0, *,
             alive: tuple[Proc, ...] = (), poll_s: float = 0.1) -> float:
    """Wait on a condition (never a fixed sleep); the monotonic time it held first."""
    deadline = time.monotonic() + timeout_s
    while True:
        for p in alive:
            p.assert_running()
        if cond():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)


class Load:
    """Publishes the simulator's snapshots in order at a steady rate, up to a target the
    test raises phase by phase; what was published is the oracle's input."""

    def __init__(self, bootstrap: str, topic: str, snaps: list[Snapshot], rate: float) -> None:
        # No delivery deadline: a broker restart delays the load, it never loses any of it.
        self.producer = Producer(bootstrap, client_id="fault-load", extra={"message.timeout.ms": 0})
        self.topic, self.snaps, self.rate = topic, snaps, rate
        self.sent = 0
        self.target = 0
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)
        self._thread.start()

    def add(self, n: int) -> None:
        with self._cv:
            self.target = min(len(self.snaps), self.target + n)
            self._cv.notify_all()

    def remaining(self) -> int:
        return len(self.snaps) - self.target

    def _run(self) -> None:
        tick = 0.05
        per_tick = max(1, int(self.rate * tick))
        next_at = time.monotonic()
        while True:
            with self._cv:
                while self.sent >= self.target and not self._stop:
                    self._cv.wait()
                    next_at = time.monotonic()
                if self._stop:
                    return
                end = min(self.target, self.sent + per_tick)
            for s in self.snaps[self.sent:end]:
                key, value = encode_snapshot(s)
                self.producer.send(self.topic, value, key)
            with self._cv:
                self.sent = end
                self._cv.notify_all()
            next_at += tick  # pacing of the generator itself, not a wait in the test
            time.sleep(max(0.0, next_at - time.monotonic()))

    def settle(self, timeout_s: float = 300.0) -> list[Snapshot]:
        """Wait until everything up to the target is sent and acknowledged; the published list."""
        with self._cv:
            if not self._cv.wait_for(lambda: self.sent >= self.target, timeout=timeout_s):
                raise AssertionError("the load did not reach its target")
        flush_until_delivered(self.producer, "fault-suite load")
        return self.snaps[:self.sent]

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=10)
        self.producer.flush(30)


LiveKey = tuple[str, str, str, str, str]  # provider, account, currency, report_date, bucket_start


def add_changes(acc: dict[LiveKey, tuple[Decimal, int]], changes: list[dict[str, Any]]) -> None:
    for c in changes:
        k = (c["provider"], c["account_id"], c["currency"], c["report_date"], c["bucket_start"])
        spend, clicks = acc.get(k, (Decimal(0), 0))
        acc[k] = (spend + Decimal(str(c["spend"])), clicks + int(c["clicks"]))


@dataclass
class Connection:
    """One connection of the stream client: the Last-Event-ID it sent, what came first."""

    sent_last_event_id: str | None
    first_event: str | None = None
    first_data: dict[str, Any] | None = None
    first_at: float | None = None


@dataclass
class StreamClient:
    """A dashboard's EventSource: reconnects after a failure with the last id it saw
    (``Last-Event-ID``), sums the changes of the updates since the last ``reset``."""

    base: str
    token: str
    workspace_id: str
    last_id: str | None = None
    connections: list[Connection] = field(default_factory=list)
    resets: list[tuple[str, float]] = field(default_factory=list)
    acc: dict[LiveKey, tuple[Decimal, int]] = field(default_factory=dict)
    events_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> StreamClient:
        threading.Thread(target=self._run, name="fault-sse", daemon=True).start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            headers = {"Authorization": f"Bearer {self.token}"}
            if self.last_id:
                headers["Last-Event-ID"] = self.last_id
            try:
                with httpx.stream("GET", f"{self.base}/stream", params={"workspace_id": self.workspace_id},
                                  headers=headers, timeout=httpx.Timeout(5.0)) as r:
                    if r.status_code != 200:
                        self.stop.wait(0.5)  # an EventSource's retry
                        continue
                    conn = Connection(self.last_id)
                    with self.lock:
                        self.connections.append(conn)
                    self._read(r, conn)
            except httpx.HTTPError:
                pass
            self.stop.wait(0.5)  # an EventSource's retry

    def _read(self, r: httpx.Response, conn: Connection) -> None:
        ev: dict[str, str] = {}
        for line in r.iter_lines():
            if self.stop.is_set():
                return
            if line:
                if not line.startswith(":"):
                    name, _, value = line.partition(":")
                    ev[name] = value.lstrip(" ")
                continue
            if "event" in ev:
                self._on(ev, conn)
            ev = {}

    def _on(self, ev: dict[str, str], conn: Connection) -> None:
        kind, now = ev["event"], time.monotonic()
        if kind == "heartbeat":
            return
        data = json.loads(ev.get("data") or "{}")
        with self.lock:
            if conn.first_event is None:
                conn.first_event, conn.first_data, conn.first_at = kind, data, now
            if ev.get("id"):
                self.last_id = ev["id"]
            self.events_at.append(now)
            if kind == "update":
                add_changes(self.acc, data.get("changes", []))
            elif kind == "reset":
                self.acc.clear()
                self.resets.append((ev.get("id", ""), now))

    def close(self) -> None:
        self.stop.set()
