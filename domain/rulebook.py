"""The rules the running flow evaluates, indexed for the hot path.

A process-wide side input: a feed thread (``pipelines.rules_feed``) applies rule
changes from the compacted ``metricx.rules`` topic and entity names from the pollers'
entity sync; the dataflow's steps only read.  Reads are lock-free: every change builds
a new per-workspace index and swaps it in with one dict assignment (atomic under the
GIL), so a step sees either the old rules or the new ones, never half of an update.

The book also meters what each workspace's rules cost (``domain.metering``): the
stop-loss step charges every evaluation, and a workspace over budget has its rules
taken out of the book at once (the next snapshot of it meets no rule) and handed to
the ``on_disable`` listeners — the feed records them as ``disabled`` with the reason,
where the merchant sees it.  A rule of that workspace put again (resumed, edited,
created) is evaluated again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from domain.metering import CostMeter
from schemas.rules import Rule

log = logging.getLogger("metricx.rules")

# (workspace, the ids of the rules taken out, why)
DisableListener = Callable[[str, list[str], str], None]

NameKey = tuple[str, str, str, str]  # workspace, provider, account, entity id

ByLevel = dict[str, tuple[Rule, ...]]
_EMPTY: ByLevel = {}
_ANY = "*"  # rules not scoped to accounts
_NO_NEEDS = (False, False)
LEAF_RULE_LEVEL = "ad"


def _needs(rules: list[Rule]) -> tuple[bool, bool]:
    """What the watches of an account with these rules must keep beyond the totals:
    (hourly deltas, per-ad past days)."""
    return (any(r.window == "hours" for r in rules),
            any(r.window == "days" and r.level == LEAF_RULE_LEVEL for r in rules))


class RuleBook:
    def __init__(self, rules: list[Rule] | None = None, *, meter: CostMeter | None = None) -> None:
        self.meter = meter or CostMeter()
        self._listeners: list[DisableListener] = []
        self._lock = threading.Lock()  # writers only
        self._rules: dict[str, Rule] = {}
        # ws -> account (or "*") -> level -> the rules an entity of that account meets
        self._index: dict[str, dict[str, ByLevel]] = {}
        self._needs: dict[str, dict[str, tuple[bool, bool]]] = {}  # ws -> account (or "*") -> _needs()
        self.generation = 0  # bumped on every change, so watches can forget old marks
        self._names: Mapping[NameKey, str] = {}
        for r in rules or ():
            self.put(r)

    # -- read side (the dataflow) --
    def for_account(self, workspace_id: str, account_id: str) -> ByLevel:
        """The rules an entity of this account meets, by level (scoped to the account,
        or to no account); the other scope filters are checked per rule."""
        by_account = self._index.get(workspace_id)
        if by_account is None:
            return _EMPTY
        found = by_account.get(account_id)
        return found if found is not None else by_account.get(_ANY, _EMPTY)

    def needs(self, workspace_id: str, account_id: str) -> tuple[bool, bool]:
        """(hourly deltas, per-ad past days): what this account's watches must keep
        beyond the totals."""
        by_account = self._needs.get(workspace_id)
        if by_account is None:
            return _NO_NEEDS
        found = by_account.get(account_id)
        return found if found is not None else by_account.get(_ANY, _NO_NEEDS)

    def uses_hours(self, workspace_id: str, account_id: str) -> bool:
        """Whether a rule this account meets has an ``hours`` window (only then do its
        watches keep hourly deltas)."""
        return self.needs(workspace_id, account_id)[0]

    def uses_ad_days(self, workspace_id: str, account_id: str) -> bool:
        """Whether an ad-level rule this account meets has a ``days`` window (only then
        do its watches keep each ad's past days)."""
        return self.needs(workspace_id, account_id)[1]

    def rule_ids(self) -> set[str]:
        return set(self._rules)

    def name(self, workspace_id: str, provider: str, account_id: str, entity_id: str) -> str | None:
        return self._names.get((workspace_id, provider, account_id, entity_id))

    def __len__(self) -> int:
        return len(self._rules)

    def name_filtered_workspaces(self) -> set[str]:
        return {r.workspace_id for r in list(self._rules.values()) if r.name_contains is not None}

    # -- write side (the feed) --
    def put(self, rule: Rule) -> None:
        """Add or replace an active rule (a newer version wins; an older one is ignored,
        so an out-of-order replay of the topic cannot roll a rule back)."""
        with self._lock:
            old = self._rules.get(rule.id)
            if old is not None and old.version > rule.version:
                return
            self._rules[rule.id] = rule
            self._reindex(rule.workspace_id)
            if old is not None and old.workspace_id != rule.workspace_id:
                self._reindex(old.workspace_id)

    def remove(self, rule_id: str) -> None:
        """A deleted or paused rule stops being evaluated."""
        with self._lock:
            old = self._rules.pop(rule_id, None)
            if old is not None:
                self._reindex(old.workspace_id)

    def set_names(self, names: Mapping[NameKey, str]) -> None:
        self._names = dict(names)

    # -- metering (charged by the dataflow) --
    def on_disable(self, listener: DisableListener) -> None:
        self._listeners.append(listener)

    def charge(self, workspace_id: str, cost_ns: int) -> None:
        """One evaluation of a snapshot of ``workspace_id`` took ``cost_ns``."""
        reason = self.meter.charge(workspace_id, cost_ns)
        if reason is not None:
            self.disable_workspace(workspace_id, reason)

    def disable_workspace(self, workspace_id: str, reason: str) -> list[str]:
        """Stop evaluating every rule of the workspace now; tell the listeners."""
        with self._lock:
            ids = sorted(i for i, r in self._rules.items() if r.workspace_id == workspace_id)
            for i in ids:
                del self._rules[i]
            self._reindex(workspace_id)
        self.meter.forget(workspace_id)
        log.warning("rules disabled", extra={"workspace_id": workspace_id, "rule_ids": ids, "reason": reason})
        for listener in self._listeners:
            listener(workspace_id, ids, reason)
        return ids

    def _reindex(self, workspace_id: str) -> None:
        mine = sorted((r for r in self._rules.values() if r.workspace_id == workspace_id), key=lambda r: r.id)
        accounts = {a for r in mine for a in r.account_ids}
        by_account: dict[str, ByLevel] = {}
        needs: dict[str, tuple[bool, bool]] = {}
        for acc in (_ANY, *accounts):
            by_level: dict[str, list[Rule]] = {}
            for r in mine:
                if not r.account_ids or acc in r.account_ids:
                    by_level.setdefault(r.level, []).append(r)
            if by_level:
                by_account[acc] = {lvl: tuple(rs) for lvl, rs in by_level.items()}
                needs[acc] = _needs([r for rs in by_level.values() for r in rs])
        index, needs_index = dict(self._index), dict(self._needs)
        if by_account:
            index[workspace_id], needs_index[workspace_id] = by_account, needs
        else:
            index.pop(workspace_id, None)
            needs_index.pop(workspace_id, None)
        self._needs = needs_index  # read before the index: a stale "no" only delays the data
        self._index = index
        self.generation += 1
