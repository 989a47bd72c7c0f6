"""The flow's steps as plain functions, shared by the Bytewax dataflow and the plain
consumer loop (the no-framework baseline), so both run exactly the same logic."""

from __future__ import annotations

from datetime import datetime

from pipelines.deltas import (
    RESTATEMENT_WINDOW_DAYS,
    Applied,
    EntityState,
    Ignored,
    Outcome,
    Refused,
    apply_snapshot,
)
from schemas.envelope import DeadLetter, Envelope
from schemas.insight import InvalidInsight, Snapshot, parse_insight

Checked = tuple[Snapshot, Envelope]


def validate(env: Envelope, now: datetime) -> Checked | DeadLetter:
    try:
        return parse_insight(env.value, env.key, now), env
    except InvalidInsight as exc:
        return DeadLetter(env, exc.reason, "validate")


def fold(
    state: EntityState | None, item: Checked, window_days: int = RESTATEMENT_WINDOW_DAYS
) -> tuple[EntityState, tuple[Outcome, Envelope]]:
    snap, env = item
    state, outcome = apply_snapshot(state, snap, window_days)
    return state, (outcome, env)


def is_refused(item: tuple[Outcome, Envelope]) -> bool:
    return isinstance(item[0], Refused)


def to_dead_letter(item: tuple[Outcome, Envelope]) -> DeadLetter:
    outcome, env = item
    assert isinstance(outcome, Refused)
    return DeadLetter(env, outcome.reason, "series")


StoreItem = tuple[Applied | Ignored, Envelope]
SinkItem = StoreItem | DeadLetter
