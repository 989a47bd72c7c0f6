"""Stop-loss rules: the API/Kafka contract (Pydantic) and the plain values the pipeline
evaluates (dataclasses).

One rule definition travels unchanged from the API body to the ``rules`` table
(``definition`` column) to the compacted topic ``metricx.rules`` (``metricx.rule.v1``,
keyed by rule id; a tombstone deletes), so the three can never disagree on a field name.

Money thresholds are in the *account's* currency: a rule scoped to several accounts
compares each entity in its own currency, and never converts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from schemas.edge import NO_NUL, Invalid, first_error

RULE_SCHEMA = "metricx.rule.v1"
RULES_TOPIC = "metricx.rules"

RULE_METRICS = ("spend", "impressions", "clicks", "conversions", "revenue", "roas", "cpa", "cpc", "ctr", "cpm")
OPERATORS = ("<", "<=", ">", ">=", "=", "!=")
LEVELS = ("ad", "adset", "campaign")
MAX_HOURS = 48
MAX_DAYS = 28  # within the pipeline's restatement window (35 days)
MAX_CONDITION_DEPTH = 3

# What one workspace may ask of the shared pipeline (every snapshot of an account is
# judged against every rule that account meets, in the same process as every other
# tenant's snapshots).  Far above what a merchant writes — a real rule holds 1-5
# conditions and fits in well under 2 KB, a large agency account meets a dozen rules —
# and far below what stalls others: three rules of 8,000 conditions took ~25 ms of
# pipeline time per snapshot.  At these limits a worst-case book costs ~0.4 ms per
# snapshot (measured), under the evaluation budget (domain.metering).
MAX_CONDITIONS = 50  # conditions in one rule, counted across its groups
MAX_RULE_BYTES = 16 * 1024  # the rule's definition as compact JSON (what is stored and published)
MAX_RULES_PER_WORKSPACE = 200  # stored rules, whatever their status
MAX_RULES_PER_ACCOUNT = 50  # rules one ad account meets: scoped to it, or to no account

Metric = Literal["spend", "impressions", "clicks", "conversions", "revenue", "roas", "cpa", "cpc", "ctr", "cpm"]
Operator = Literal["<", "<=", ">", ">=", "=", "!="]
Level = Literal["ad", "adset", "campaign"]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")]
Threshold = Annotated[Decimal, Field(ge=0, le=Decimal("10000000000"), allow_inf_nan=False, decimal_places=6)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConditionIn(_Strict):
    metric: Metric
    operator: Operator
    value: Threshold


class GroupIn(_Strict):
    """Conditions combined with AND (``all``) or OR (``any``); groups nest."""

    op: Literal["and", "or"] = "and"
    conditions: list[Union[ConditionIn, GroupIn]] = Field(min_length=1, max_length=20)  # noqa: UP007

    @model_validator(mode="after")
    def _depth(self) -> GroupIn:
        if _depth(self) > MAX_CONDITION_DEPTH:
            raise ValueError(f"conditions nest deeper than {MAX_CONDITION_DEPTH} levels")
        return self


def _depth(g: GroupIn) -> int:
    return 1 + max((_depth(c) for c in g.conditions if isinstance(c, GroupIn)), default=0)


class ScopeIn(_Strict):
    level: Level = "ad"
    providers: list[Literal["meta", "google", "tiktok", "sim"]] = Field(default_factory=list, max_length=4)
    account_ids: list[Id] = Field(default_factory=list, max_length=500)
    campaign_ids: list[Id] = Field(default_factory=list, max_length=5000)
    # Case-insensitive substring of the entity's name at ``level`` (names come from the
    # pollers' entity sync); an entity whose name is not known yet never matches.
    name_contains: Annotated[str, StringConstraints(min_length=1, max_length=200), NO_NUL] | None = None


class WindowIn(_Strict):
    """``today``: the account's local day so far; ``hours``: the last N hours, rolling
    (deltas captured in that time); ``days``: the last N account days including today."""

    kind: Literal["today", "hours", "days"] = "today"
    n: int | None = None

    @model_validator(mode="after")
    def _n(self) -> WindowIn:
        if self.kind == "today" and self.n not in (None, 1):
            raise ValueError("window 'today' takes no n")
        if self.kind == "hours" and not (self.n and 1 <= self.n <= MAX_HOURS):
            raise ValueError(f"window 'hours' needs 1 <= n <= {MAX_HOURS}")
        if self.kind == "days" and not (self.n and 1 <= self.n <= MAX_DAYS):
            raise ValueError(f"window 'days' needs 1 <= n <= {MAX_DAYS}")
        return self


class GuardsIn(_Strict):
    """Minimum data before a rule may fire (or recover): thin data never decides."""

    min_spend: Threshold | None = None
    min_impressions: Annotated[int, Field(ge=0, le=10**13)] | None = None
    min_clicks: Annotated[int, Field(ge=0, le=10**13)] | None = None


class TriggerIn(_Strict):
    """``once_per_day``: at most once per entity per account day; ``cooldown``: again
    only after ``minutes``; ``every_time``: on every new delta that satisfies it."""

    mode: Literal["once_per_day", "cooldown", "every_time"] = "once_per_day"
    minutes: Annotated[int, Field(ge=1, le=10080)] | None = None

    @model_validator(mode="after")
    def _minutes(self) -> TriggerIn:
        if (self.mode == "cooldown") != (self.minutes is not None):
            raise ValueError("'minutes' is required for mode 'cooldown' and only for it")
        return self


class PauseIn(_Strict):
    enabled: bool = False
    dry_run: bool = True  # audited "would pause" until a human turns this off


class ActionsIn(_Strict):
    notify: list[UUID] = Field(default_factory=list, max_length=20)  # channel ids
    pause: PauseIn = Field(default_factory=PauseIn)
    notify_recovery: bool = True
    resume_on_recovery: bool = False


class RuleBody(_Strict):
    """A rule's definition: the shape the table, the topic and the API share."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True), NO_NUL]
    scope: ScopeIn = Field(default_factory=ScopeIn)
    conditions: GroupIn
    window: WindowIn = Field(default_factory=WindowIn)
    guards: GuardsIn = Field(default_factory=GuardsIn)
    trigger: TriggerIn = Field(default_factory=TriggerIn)
    actions: ActionsIn = Field(default_factory=ActionsIn)


def count_conditions(g: GroupIn) -> int:
    return sum(count_conditions(c) if isinstance(c, GroupIn) else 1 for c in g.conditions)


def limit_problem(rule: RuleBody) -> str | None:
    """Why a rule is over the per-rule limits (a message naming the limit), or None.
    The API refuses such a body; the pipeline's feed refuses such a message (a rule
    stored before the limits existed, or published around the API)."""
    n = count_conditions(rule.conditions)
    if n > MAX_CONDITIONS:
        return f"a rule may hold at most {MAX_CONDITIONS} conditions; this one has {n}"
    size = len(rule.model_dump_json(include=set(RuleBody.model_fields)).encode())
    if size > MAX_RULE_BYTES:
        return (f"a rule may take at most {MAX_RULE_BYTES // 1024} KiB as JSON ({MAX_RULE_BYTES} bytes); "
                f"this one takes {size} bytes (long id lists? scope by account or name instead)")
    return None


class RuleIn(RuleBody):
    """The body of ``POST /rules`` and ``PUT /rules/{id}``: a definition within the
    per-rule limits."""

    @model_validator(mode="after")
    def _limits(self) -> RuleIn:
        problem = limit_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self


RuleStatus = Literal["active", "paused", "disabled"]


class RuleV1(RuleBody):
    """A stored rule as published on ``metricx.rules``.  ``disabled``: the pipeline
    stopped evaluating it (over the limits, or its workspace's rules over the
    evaluation budget); the reason is the rule's ``last_error`` in the API."""

    schema_: Literal["metricx.rule.v1"] = Field(default="metricx.rule.v1", alias="schema")
    id: UUID
    workspace_id: UUID
    status: RuleStatus = "active"
    version: Annotated[int, Field(ge=1)] = 1
    updated_at: datetime

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InvalidRule(Invalid):
    pass


def parse_rule_message(value: bytes) -> RuleV1:
    try:
        return RuleV1.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidRule(first_error(exc)) from None


def rule_message(rule: RuleV1) -> bytes:
    return rule.model_dump_json(by_alias=True).encode()


# ---- what the pipeline evaluates: plain, hashable, no validation machinery ----------


@dataclass(frozen=True, slots=True)
class Condition:
    metric: str
    operator: str
    value: Decimal


@dataclass(frozen=True, slots=True)
class Group:
    op: str  # "and" | "or"
    conditions: tuple[Condition | Group, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    workspace_id: str
    version: int
    name: str
    level: str
    providers: frozenset[str]
    account_ids: frozenset[str]
    campaign_ids: frozenset[str]
    name_contains: str | None  # lower-cased
    filtered: bool  # scoped by provider, campaign or name (accounts are indexed, not filtered)
    conditions: Group
    window: str  # "today" | "hours" | "days"
    window_n: int
    window_label: str  # "today" | "hours:6" | "days:3": the key windows are shared under
    min_spend: Decimal | None
    min_impressions: int | None
    min_clicks: int | None
    trigger: str
    cooldown_minutes: int | None
    notify: tuple[str, ...]
    pause: bool
    pause_dry_run: bool
    notify_recovery: bool
    resume_on_recovery: bool

    def describe(self) -> str:
        """Human text of the conditions, for messages: ``spend >= 80 AND conversions = 0``."""
        return _describe(self.conditions)


def _describe(g: Group) -> str:
    parts = [
        f"{c.metric} {c.operator} {c.value.normalize():f}" if isinstance(c, Condition) else f"({_describe(c)})"
        for c in g.conditions
    ]
    return f" {g.op.upper()} ".join(parts)


def _group(g: GroupIn) -> Group:
    return Group(
        g.op,
        tuple(Condition(c.metric, c.operator, c.value) if isinstance(c, ConditionIn) else _group(c) for c in g.conditions),
    )


def to_rule(r: RuleV1) -> Rule:
    return Rule(
        id=str(r.id),
        workspace_id=str(r.workspace_id),
        version=r.version,
        name=r.name,
        level=r.scope.level,
        providers=frozenset(r.scope.providers),
        account_ids=frozenset(r.scope.account_ids),
        campaign_ids=frozenset(r.scope.campaign_ids),
        name_contains=r.scope.name_contains.lower() if r.scope.name_contains else None,
        filtered=bool(r.scope.providers or r.scope.campaign_ids or r.scope.name_contains),
        conditions=_group(r.conditions),
        window=r.window.kind,
        window_n=r.window.n or 1,
        window_label=r.window.kind if r.window.kind == "today" else f"{r.window.kind}:{r.window.n}",
        min_spend=r.guards.min_spend,
        min_impressions=r.guards.min_impressions,
        min_clicks=r.guards.min_clicks,
        trigger=r.trigger.mode,
        cooldown_minutes=r.trigger.minutes,
        notify=tuple(str(c) for c in r.actions.notify),
        pause=r.actions.pause.enabled,
        pause_dry_run=r.actions.pause.dry_run,
        notify_recovery=r.actions.notify_recovery,
        resume_on_recovery=r.actions.resume_on_recovery,
    )


def definition(rule: RuleBody) -> dict[str, Any]:
    """The JSON stored in ``rules.definition`` (the definition's fields only)."""
    return RuleBody.model_validate(rule.model_dump(include=set(RuleBody.model_fields))).model_dump(mode="json")
