"""What one commit writes: the rows of one database transaction (one per applied
snapshot, ``schemas.columns.STAGE_COLUMNS``), the Kafka progress it records, the live
update per workspace, the dead letters sent before it and the alerts written with it.

Built by ``domain.batch.build_batch`` from the flow's outcomes; written by
``adapters.timescale.InsightStore`` (which needs nothing else to know it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from schemas.alerts import Alert
from schemas.envelope import DeadLetter
from schemas.metrics import Metrics

Row = tuple[Any, ...]
LiveKey = tuple[str, str, str, date, datetime]  # provider, account, currency, day, bucket


@dataclass
class Batch:
    rows: list[Row] = field(default_factory=list)
    progress: dict[tuple[str, int], int] = field(default_factory=dict)
    live: dict[str, dict[LiveKey, Metrics]] = field(default_factory=dict)
    ignored: Counter[str] = field(default_factory=Counter)
    dead: list[DeadLetter] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
