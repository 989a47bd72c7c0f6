"""The pipeline's Kafka source when the data it was to resume from is gone (the topic
recreated, or retention deleted what it never read): the flow stops and says which
offset, instead of librdkafka's default of jumping silently to the end of the log and
skipping everything in between."""

from __future__ import annotations

import signal

from adapters.kafka import Producer, delete_topics, ensure_topics, publish_snapshots
from ground.settings import Settings
from schemas.topics import TopicSpec
from tests.integration.conftest import Pipeline, Topics
from tests.integration.test_pipeline_e2e import simulated
from tests.integration.totals import progress, wait_until


def test_a_resume_offset_beyond_the_log_stops_the_flow_loudly(
    services: Settings, topics: Topics, database: str, pipeline: Pipeline
) -> None:
    snaps = simulated(seed=51, hours=1)
    producer = Producer(services.kafka.bootstrap)
    publish_snapshots(producer, snaps, topics.raw)
    producer.flush()
    first = pipeline.start()
    wait_until(lambda: progress(database, topics.raw) == len(snaps), 90, "the first run", pipeline.assert_running)
    first.send_signal(signal.SIGINT)  # a clean stop: offsets snapshotted where the log ends
    assert first.wait(timeout=60) == 0
    pipeline.procs.clear()

    # The topic is recreated: three new messages, all below the offsets the flow resumes at.
    delete_topics(services.kafka.bootstrap, [topics.raw])
    ensure_topics(services.kafka.bootstrap, [TopicSpec(topics.raw, topics.partitions)])
    publish_snapshots(producer, simulated(seed=52, hours=1)[:3], topics.raw)
    producer.flush()

    second = pipeline.start()
    wait_until(lambda: second.poll() is not None, 90, "the flow to stop on the missing offsets")
    log = pipeline.log(2)
    assert second.returncode != 0
    assert "not retried" in log and ("OFFSET_OUT_OF_RANGE" in log or "_AUTO_OFFSET_RESET" in log), log[-3000:]
