"""The copilot's tools: strict inputs (Pydantic) and the definitions the model receives.

Read-only and few: a metrics query, a period comparison, an entity lookup, recent
alerts, and a rule draft (returned for the user to confirm through the Rules API; the
copilot never saves or pauses anything).

No input names a workspace, a tenant or a table: the workspace comes only from the
authenticated request and is bound by the code that runs the tool.  Every model is
``extra="forbid"`` with bounded strings, lists and numbers, so a tool call is checked
twice - by the API against the JSON schema (``strict``), then here - and a refusal
goes back to the model as an ``is_error`` tool result with the first problem.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from schemas.edge import first_error
from schemas.rules import (
    MAX_DAYS,
    MAX_HOURS,
    ConditionIn,
    GroupIn,
    GuardsIn,
    Metric,
    Operator,
    RuleIn,
    ScopeIn,
    Threshold,
    TriggerIn,
    WindowIn,
)

MAX_RANGE_DAYS: Final = 400  # as the dashboard's custom range
MAX_INTRADAY_DAYS: Final = 31  # hour and 15-minute breakdowns
MAX_ROWS: Final = 100
TIME_GRAINS: Final = frozenset({"day", "hour", "15m"})

Provider = Literal["meta", "google", "tiktok", "sim"]
Dimension = Literal["provider", "account", "campaign", "ad_set", "ad", "day", "hour", "15m"]
Breakdown = Literal["campaign", "account", "ad"]
Preset = Literal["today", "yesterday", "last_7_days", "last_30_days", "this_month", "last_month"]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")]
Search = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PeriodIn(_Strict):
    """A preset, or ``start``..``end`` (inclusive), in the workspace's timezone."""

    preset: Preset | None = Field(default=None, description="a named period ending today; or give start and end")
    start: date | None = Field(default=None, description="first day, YYYY-MM-DD")
    end: date | None = Field(default=None, description="last day, YYYY-MM-DD, inclusive")

    @model_validator(mode="after")
    def _one_form(self) -> PeriodIn:
        dates = (self.start is not None, self.end is not None)
        if self.preset is not None and any(dates):
            raise ValueError("give either preset or start/end, not both")
        if self.preset is None and not all(dates):
            raise ValueError("give a preset, or both start and end")
        if self.start is not None and self.end is not None:
            if self.start > self.end:
                raise ValueError("start must not be after end")
            if (self.end - self.start).days + 1 > MAX_RANGE_DAYS:
                raise ValueError(f"a period spans at most {MAX_RANGE_DAYS} days")
        return self


class FiltersIn(_Strict):
    providers: list[Provider] = Field(default_factory=list, max_length=4)
    account_ids: list[Id] = Field(default_factory=list, max_length=50)
    campaign_ids: list[Id] = Field(default_factory=list, max_length=100)
    ad_set_ids: list[Id] = Field(default_factory=list, max_length=100)
    ad_ids: list[Id] = Field(default_factory=list, max_length=100)
    name_contains: Search | None = Field(default=None, description="case-insensitive part of the name at name_level")
    name_level: Literal["campaign", "ad_set", "ad"] = "campaign"
    currency: Currency | None = Field(default=None, description="only rows in this currency")


class ConditionOnResult(_Strict):
    """Kept rows satisfy it; a ratio with a zero denominator is undefined and never
    matches (as in stop-loss rules)."""

    metric: Metric
    operator: Operator
    value: Threshold


class MetricsQuery(_Strict):
    """Measures and ratios over a period, grouped by up to two dimensions (at most one
    of them a time grain).  Currencies are never summed together: every row carries its
    currency."""

    metrics: list[Metric] = Field(min_length=1, max_length=10)
    group_by: list[Dimension] = Field(default_factory=list, max_length=2)
    period: PeriodIn
    filters: FiltersIn = Field(default_factory=FiltersIn)
    conditions: list[ConditionOnResult] = Field(default_factory=list, max_length=10,
                                                description="all must hold (AND)")
    order_by: Metric | None = None
    descending: bool = True
    limit: Annotated[int, Field(ge=1, le=MAX_ROWS)] = 20

    @model_validator(mode="after")
    def _shape(self) -> MetricsQuery:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("metrics repeat")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by repeats a dimension")
        grains = [g for g in self.group_by if g in TIME_GRAINS]
        if len(grains) > 1:
            raise ValueError("group by at most one of day, hour, 15m")
        p = self.period
        if grains and grains[0] in ("hour", "15m") and p.start is not None and p.end is not None \
                and (p.end - p.start).days + 1 > MAX_INTRADAY_DAYS:
            raise ValueError(f"hour and 15m breakdowns span at most {MAX_INTRADAY_DAYS} days")
        return self


class ComparePeriods(_Strict):
    """How one KPI changed between two periods, split into per-entity contributions
    that add up exactly to the change; days whose conversions are still settling are
    flagged."""

    metric: Metric
    current: PeriodIn
    previous: PeriodIn | None = Field(default=None, description="default: the equal-length period just before")
    by: Breakdown = "campaign"
    filters: FiltersIn = Field(default_factory=FiltersIn)
    limit: Annotated[int, Field(ge=1, le=50)] = 10


class FindEntities(_Strict):
    """Campaigns, ad sets, ads or accounts whose name contains ``query``."""

    query: Search
    level: Literal["account", "campaign", "ad_set", "ad"] | None = None
    providers: list[Provider] = Field(default_factory=list, max_length=4)
    limit: Annotated[int, Field(ge=1, le=25)] = 10


class RecentAlerts(_Strict):
    days: Annotated[int, Field(ge=1, le=30)] = 7
    rule_name_contains: Search | None = None
    entity_level: Literal["ad", "adset", "campaign"] | None = None
    limit: Annotated[int, Field(ge=1, le=50)] = 20


class DraftRule(_Strict):
    """A stop-loss rule for the user to review; flat conditions (AND or OR).  It is
    never saved here and never pauses anything: the user confirms it in the Rules API."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    scope: ScopeIn = Field(default_factory=ScopeIn)
    op: Literal["and", "or"] = "and"
    conditions: list[ConditionIn] = Field(min_length=1, max_length=10)
    window: WindowIn = Field(default_factory=WindowIn,
                             description=f"today; hours (n 1..{MAX_HOURS}); days (n 1..{MAX_DAYS})")
    guards: GuardsIn = Field(default_factory=GuardsIn)
    trigger: TriggerIn = Field(default_factory=TriggerIn)

    def to_rule(self) -> RuleIn:
        """The ``RuleIn`` body, notifying nobody and pausing nothing until the user says so."""
        return RuleIn(name=self.name, scope=self.scope, conditions=GroupIn(op=self.op, conditions=list(self.conditions)),
                      window=self.window, guards=self.guards, trigger=self.trigger)


ToolInput = MetricsQuery | ComparePeriods | FindEntities | RecentAlerts | DraftRule

TOOLS: Final[dict[str, tuple[type[_Strict], str]]] = {
    "metrics_query": (MetricsQuery, (
        "Read the workspace's ad metrics: any of spend, impressions, clicks, conversions, revenue, roas, cpa, "
        "cpc, ctr, cpm over a period, grouped by up to two of provider, account, campaign, ad_set, ad, day, "
        "hour, 15m. Ratios are computed from sums, exactly as the dashboard shows them; an undefined ratio "
        "(zero denominator) is null and never matches a condition. Rows of different currencies are kept "
        "apart. Returns a table whose cells you cite.")),
    "compare_periods": (ComparePeriods, (
        "Explain a change of one KPI between two periods: the total change and per-campaign (or per-account, "
        "per-ad) contributions that add up exactly to it. Days whose conversions are still settling are "
        "flagged.")),
    "find_entities": (FindEntities, (
        "Find accounts, campaigns, ad sets or ads by part of their name; returns their ids and names.")),
    "recent_alerts": (RecentAlerts, "List the stop-loss alerts of the last days, newest first."),
    "draft_rule": (DraftRule, (
        "Draft a stop-loss rule for the user to review and confirm in the Rules page. It saves nothing and "
        "pauses nothing.")),
}


class InvalidToolInput(ValueError):
    pass


def parse_tool_input(name: str, raw: object) -> ToolInput:
    """The validated input of tool ``name``; InvalidToolInput says what is wrong."""
    spec = TOOLS.get(name)
    if spec is None:
        raise InvalidToolInput(f"unknown tool {name[:64]!r}")
    try:
        parsed = spec[0].model_validate(raw)
    except ValidationError as exc:
        raise InvalidToolInput(first_error(exc)) from None
    assert isinstance(parsed, MetricsQuery | ComparePeriods | FindEntities | RecentAlerts | DraftRule)
    return parsed


def input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, self-contained (no ``$ref``), without titles, every
    object closed (``additionalProperties: false``)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    out = _inline(schema, defs)
    assert isinstance(out, dict)
    return out


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline(merged, defs)
        out = {k: _inline(v, defs) for k, v in node.items() if k != "title"}
        if out.get("type") == "object":
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def tool_definitions() -> list[dict[str, Any]]:
    """The ``tools`` parameter of every request."""
    return [{"name": name, "description": desc, "input_schema": input_schema(model), "strict": True}
            for name, (model, desc) in TOOLS.items()]
