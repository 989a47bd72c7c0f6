"""Fixtures for tests against the real Kafka, PostgreSQL and Redis (``make services-up``).

Each test gets its own topics and its own freshly migrated database, so tests neither
see each other's data nor depend on order.  A missing service is a failure with the fix
in the message, never a skip: ``make test`` starts them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adapters.kafka import check_reachable as kafka_ok
from adapters.kafka import delete_topics, ensure_topics
from adapters.redis_live import check_reachable as redis_ok
from adapters.timescale import check_reachable as db_ok
from ground.settings import REPO_ROOT, Settings, load_settings
from schemas.topics import deadletter_topic_spec, raw_topic_spec
from tests.databases import FLAVOURS, fresh_database, timescale_problem


@pytest.fixture(scope="session")
def services() -> Settings:
    settings = load_settings()
    try:
        kafka_ok(settings.kafka.bootstrap)
        db_ok(settings.database.libpq_url)
        redis_ok(settings.redis.url)
    except ConnectionError as exc:
        pytest.fail(f"{exc}\n(these tests need the real services: `make services-up`, or run `make test`)")
    return settings


@pytest.fixture
def database(services: Settings, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new database, migrated; returns its libpq URL.  Its flavour follows
    ``METRICX_TIMESCALEDB`` (``auto``: TimescaleDB when the server preloads it), unless a
    test parametrizes it: ``@pytest.mark.parametrize("database", ["postgresql"],
    indirect=True)`` (or ``"timescaledb"``)."""
    flavour = getattr(request, "param", None)
    mode = FLAVOURS[flavour] if flavour else services.database.timescaledb
    if flavour == "timescaledb" and services.database.timescaledb == "off":
        pytest.skip("METRICX_TIMESCALEDB=off: the plain-PostgreSQL lane leaves TimescaleDB out")
    if flavour == "timescaledb" and (problem := timescale_problem(services.database.libpq_url)):
        pytest.fail(problem)
    with fresh_database(services.database.libpq_url, mode) as url:
        yield url


@dataclass
class Topics:
    raw: str
    deadletter: str
    partitions: int


@pytest.fixture
def topics(services: Settings, request: pytest.FixtureRequest) -> Iterator[Topics]:
    suffix = uuid.uuid4().hex[:8]
    partitions = getattr(request, "param", 4)
    t = Topics(f"metricx.insights.raw.t{suffix}", f"metricx.deadletter.t{suffix}", partitions)
    ensure_topics(services.kafka.bootstrap, [raw_topic_spec(t.raw, partitions), deadletter_topic_spec(t.deadletter)])
    yield t
    delete_topics(services.kafka.bootstrap, [t.raw, t.deadletter])


@dataclass
class Pipeline:
    """`metricx pipeline` as a real OS process, so a test can kill -9 it."""

    env: dict[str, str]
    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    runs: int = 0

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        self.runs += 1
        with open(self.log_dir / f"pipeline-{self.runs}.log", "wb") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "metricx.cli", "pipeline", *args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            )
        self.procs.append(p)
        return p

    def log(self, run: int) -> str:
        return (self.log_dir / f"pipeline-{run}.log").read_text(errors="replace")

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs.clear()

    def assert_running(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise AssertionError(f"pipeline exited with {p.returncode}:\n{self.log(self.runs)[-4000:]}")


@pytest.fixture
def pipeline(services: Settings, database: str, topics: Topics, tmp_path: Path) -> Iterator[Pipeline]:
    env = {
        **os.environ,
        "METRICX_DATABASE_URL": database,
        "METRICX_RAW_TOPIC": topics.raw,
        "METRICX_DEADLETTER_TOPIC": topics.deadletter,
        "METRICX_DATA_DIR": str(tmp_path / "data"),
        "METRICX_SNAPSHOT_INTERVAL_S": "1",
        "PYTHONUNBUFFERED": "1",
    }
    p = Pipeline(env, tmp_path)
    yield p
    p.kill()
