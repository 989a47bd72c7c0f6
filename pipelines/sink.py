"""The flow's output: the commit point (:mod:`pipelines.commit`) as a Bytewax sink.

Keyed by entity; one partition (a database connection and its commit thread) per
worker.  Each epoch's recovery snapshot waits until the database holds everything the
epoch wrote, so Bytewax never records an epoch as recoverable ahead of the tables.
Built by :mod:`pipelines.run`; a test hands the flow Bytewax's ``TestingSink`` instead.
"""

from __future__ import annotations

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from ground.metrics import SNAPSHOT_SECONDS
from ground.settings import Settings
from pipelines.commit import BackgroundCommitter, Committer
from pipelines.steps import SinkItem


class _CommitPartition(StatefulSinkPartition[SinkItem, None]):
    def __init__(self, committer: BackgroundCommitter) -> None:
        self._committer = committer

    def write_batch(self, values: list[SinkItem]) -> None:
        self._committer.submit(values)

    def snapshot(self) -> None:
        # Called at the end of every epoch, before Bytewax records the epoch as
        # recoverable: wait until the database holds everything written so far.
        with SNAPSHOT_SECONDS.time():
            self._committer.drain()

    def close(self) -> None:
        self._committer.close()


class CommitSink(FixedPartitionedSink[SinkItem, None]):
    """Keyed by entity; one partition (connection + commit thread) per worker."""

    def __init__(self, settings: Settings, consumer: str, partitions: int) -> None:
        self._settings = settings
        self._consumer = consumer
        self._partitions = partitions

    def list_parts(self) -> list[str]:
        return [f"commit-{i}" for i in range(self._partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _CommitPartition:
        committer = Committer(self._settings, consumer=self._consumer, worker=for_part)
        return _CommitPartition(BackgroundCommitter(committer))
