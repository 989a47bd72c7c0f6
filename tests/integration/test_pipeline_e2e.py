"""Simulated ad accounts through the real Kafka -> Bytewax -> PostgreSQL path.

The oracle is the simulator's: per series, what the platform reported last
(``expected_totals``), computed without any pipeline code.  Every stored view of the
numbers must equal it: the deltas summed, the latest snapshot, the daily table, the
15-minute and hourly rollups.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from adapters.kafka import Producer, publish_snapshots
from adapters.redis_live import live_stream_key
from domain.sim.generator import expected_totals, poll_stream
from domain.sim.world import build_world
from ground.settings import Settings
from schemas.insight import Snapshot
from schemas.metrics import Metrics
from tests.databases import refresh_aggregates
from tests.integration.conftest import Pipeline, Topics
from tests.integration.totals import SeriesKey, latest_snapshots, normalise, per_series, progress, wait_until

TABLES = ("metric_deltas", "metrics_15m", "metrics_hourly", "metrics_daily")


def simulated(seed: int, hours: int, ads_per_adset: int = 3) -> list[Snapshot]:
    """``hours`` of 15-minute polls ending now, with duplicates, reordering and restatements."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    polls = hours * 4 + 1
    world = build_world(seed, ads_per_adset=ads_per_adset)
    return list(poll_stream(world, end - timedelta(minutes=15 * (polls - 1)), polls, seed=seed))


def publish(services: Settings, topic: str, snaps: list[Snapshot]) -> None:
    producer = Producer(services.kafka.bootstrap)
    publish_snapshots(producer, snaps, topic)
    producer.flush()


def stored_equals(database: str, expected: dict[SeriesKey, Metrics]) -> bool:
    return normalise(per_series(database, "metrics_daily")) == expected


def assert_exact(database: str, expected: dict[SeriesKey, Metrics]) -> None:
    # metrics_hourly is a continuous aggregate on TimescaleDB: restatements into hours its
    # refresh policy already materialised show after the next refresh (the README's
    # promise); the policy may have run during the test, so refresh as it would.
    refresh_aggregates(database)
    assert normalise(latest_snapshots(database)) == expected
    for table in TABLES:
        assert normalise(per_series(database, table)) == expected, table


def committed_epoch(recovery_dir: Path) -> int:
    """The newest epoch the recovery store holds as recoverable (0: none yet): Bytewax
    commits an epoch once every worker's snapshot of it is written."""
    newest = 0
    for part in recovery_dir.glob("part-*.sqlite3"):
        with sqlite3.connect(f"file:{part}?mode=ro", uri=True) as db:
            row = db.execute("SELECT max(commit_epoch) FROM commits").fetchone()
        newest = max(newest, row[0] or 0)
    return newest


def settled(database: str, topic: str, published: int) -> bool:
    """Every published message is committed (its Kafka progress recorded): nothing more
    can arrive, so the totals cannot move any more."""
    return progress(database, topic) == published


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("processes", "database"), [(1, None), (2, None), (1, "postgresql")],
                         ids=["one-process", "two-processes", "one-process-plain-postgresql"],
                         indirect=["database"])
def test_simulated_load_gives_exact_totals(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline, processes: int
) -> None:
    snaps = simulated(seed=11 + processes, hours=14)
    expected = normalise(expected_totals(snaps))
    # The simulated delivery has every kind of trouble in it, or this test proves less.
    keys = [(s.entity_key, s.report_date, s.captured_at) for s in snaps]
    assert len(set(keys)) < len(keys), "no duplicate deliveries in the simulated stream"
    assert len({s.report_date for s in snaps}) >= 3, "no rollover / restatement in the stream"
    publish(services, topics.raw, snaps)

    if processes == 1:
        pipeline.start()
    else:
        addrs = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
        pipeline.start("-i", "0", "-a", addrs)
        pipeline.start("-i", "1", "-a", addrs)
    wait_until(lambda: stored_equals(database, expected), 120, "daily totals to match", pipeline.assert_running)
    # Replays and late batches must not move the totals: once every message is committed
    # nothing more can arrive, and they must still be exact.
    wait_until(lambda: settled(database, topics.raw, len(snaps)), 120, "every message committed",
               pipeline.assert_running)
    assert_exact(database, expected)

    r = redis.Redis.from_url(services.redis.url)
    for ws in {s.workspace_id for s in snaps}:
        entries = r.xrevrange(live_stream_key(ws), count=1)
        assert entries, f"no live update for workspace {ws}"
        fields = entries[0][1]
        assert isinstance(fields, dict) and b"data" in fields, f"live update without its data for {ws}: {fields!r}"
        msg = json.loads(fields[b"data"])
        assert msg["schema"] == "metricx.live.v1" and msg["workspace_id"] == ws and msg["changes"]


def restart_with_the_rest(services: Settings, topics: Topics, database: str, pipeline: Pipeline,
                          rest: list[Snapshot], expected: dict[SeriesKey, Metrics], published: int
                          ) -> list[int | None]:
    """Publish the rest, start the pipeline again, check the totals are exact once every
    one of the ``published`` messages is committed; the offsets its partitions resumed
    from (second run's log)."""
    publish(services, topics.raw, rest)
    pipeline.start()
    wait_until(lambda: stored_equals(database, expected), 180, "totals after restart", pipeline.assert_running)
    wait_until(lambda: settled(database, topics.raw, published), 120, "every message committed",
               pipeline.assert_running)
    assert_exact(database, expected)
    resumed = [json.loads(line) for line in pipeline.log(2).splitlines()
               if line.startswith("{") and "kafka partition assigned" in line]
    assert len(resumed) == topics.partitions
    return [r["resume_offset"] for r in resumed]


def test_killed_pipeline_restarts_from_its_snapshot_with_exact_totals(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline
) -> None:
    snaps = simulated(seed=21, hours=36, ads_per_adset=15)
    half = len(snaps) // 2
    expected = normalise(expected_totals(snaps))
    publish(services, topics.raw, snaps[:half])

    # Small reads make many small transactions: a long enough run to kill in the middle.
    pipeline.env["METRICX_KAFKA_BATCH_SIZE"] = "100"
    pipeline.start()
    # Kill -9 mid-stream: after some batches are committed, before the first half is done.
    wait_until(lambda: progress(database, topics.raw) > half // 5, 120, "first commits", pipeline.assert_running)
    # At least one recovery snapshot taken after those commits (the interval is 1 s): the
    # store then holds every partition's position past its start.
    recovery = Path(pipeline.env["METRICX_DATA_DIR"]) / "recovery"
    before = committed_epoch(recovery)
    wait_until(lambda: committed_epoch(recovery) > before, 60, "a recovery snapshot after the first commits",
               pipeline.assert_running)
    committed_at_kill = progress(database, topics.raw)
    pipeline.kill()
    assert committed_at_kill < half, "the pipeline finished before it could be killed mid-stream"

    resumed = restart_with_the_rest(services, topics, database, pipeline, snaps[half:], expected, len(snaps))
    # It resumed from its recovery snapshot: no partition was re-read from the start.
    assert all(r is not None and r > 0 for r in resumed), resumed
    assert re.search(r"pipeline starting", pipeline.log(2))


def test_interrupted_pipeline_commits_its_last_epoch_and_resumes_exactly_there(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline
) -> None:
    """Ctrl-C (SIGINT) ends the input instead of raising inside it: the last epoch is
    committed and snapshotted, the process exits 0 without a panic, and the next start
    resumes at the offsets the database holds — nothing replayed, nothing skipped."""
    snaps = simulated(seed=23, hours=36, ads_per_adset=15)
    half = len(snaps) // 2
    expected = normalise(expected_totals(snaps))
    publish(services, topics.raw, snaps[:half])
    pipeline.env["METRICX_KAFKA_BATCH_SIZE"] = "100"
    # No periodic snapshot during the run: the only one is the stop's own.
    pipeline.env["METRICX_SNAPSHOT_INTERVAL_S"] = "600"
    first = pipeline.start()
    wait_until(lambda: progress(database, topics.raw) > half // 5, 120, "first commits", pipeline.assert_running)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) == 0, pipeline.log(1)[-3000:]
    pipeline.procs.clear()
    stopped_at = progress(database, topics.raw)
    log = pipeline.log(1)
    assert "panicked" not in log and "Traceback" not in log, log[-3000:]
    assert "pipeline stopped: its last epoch is committed" in log

    resumed = restart_with_the_rest(services, topics, database, pipeline, snaps[half:], expected, len(snaps))
    assert sum(r or 0 for r in resumed) == stopped_at > 0
