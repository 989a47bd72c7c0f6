"""The flow's steps as plain functions, shared by the Bytewax dataflow and the plain
consumer loop (the no-framework baseline), so both run exactly the same logic."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.deltas import (
    RESTATEMENT_WINDOW_DAYS,
    Applied,
    EntityState,
    Ignored,
    Outcome,
    Refused,
    apply_snapshot,
)
from domain.rulebook import RuleBook
from domain.stoploss.state import WatchState
from domain.stoploss.targets import watch_key
from domain.stoploss.watch import forget_rules, watch
from schemas.alerts import Alert
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
SinkItem = StoreItem | DeadLetter | Alert


# ---- stop-loss: applied snapshots -> the watches of the rules' targets -> alerts ------

def watch_target(book: RuleBook, outcome: Outcome) -> tuple[str, Applied] | None:
    """The campaign watch an applied snapshot feeds, if its account meets any rule
    (None, at the cost of a dict lookup, for a workspace without rules)."""
    if not isinstance(outcome, Applied):
        return None
    s = outcome.snapshot
    if not book.for_account(s.workspace_id, s.account_id):
        return None
    return watch_key(outcome), outcome


def watch_step(
    book: RuleBook, warmup: timedelta, state: WatchState | None, applied: Applied
) -> tuple[WatchState | None, list[Alert]]:
    s = applied.snapshot
    rules = book.for_account(s.workspace_id, s.account_id)
    if not rules:
        return None, []  # the account's last rule is gone: forget the watch
    clock = book.meter.clock
    started = clock()
    if state is not None and state.rules_seen != book.generation:
        forget_rules(state, book.rule_ids())

    def name_of(entity_id: str) -> str | None:
        return book.name(s.workspace_id, s.provider, s.account_id, entity_id)

    track_hours, track_ad_days = book.needs(s.workspace_id, s.account_id)
    state, alerts = watch(state, applied, rules, name_of, warmup, track_hours, track_ad_days)
    state.rules_seen = book.generation
    # What this workspace's rules cost the shared step (domain.metering): a book
    # that is slow on most snapshots is taken out before it stalls every tenant.
    book.charge(s.workspace_id, clock() - started)
    return state, alerts
