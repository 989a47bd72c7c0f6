"""Tool inputs: strict, bounded, no workspace anywhere; the definitions pass the
API's checks (the fake's, including ``strict``'s closed objects)."""

from __future__ import annotations

from typing import Any

import pytest

from copilot.tools import TOOLS, DraftRule, InvalidToolInput, MetricsQuery, parse_tool_input, tool_definitions
from schemas.rules import RuleIn
from tests.fakes.anthropic_api import FakeAnthropic

OK_QUERY: dict[str, Any] = {"metrics": ["spend", "roas"], "group_by": ["campaign", "day"],
                            "period": {"preset": "last_7_days"}}


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        out = set(node)
        for k, v in node.items():
            out |= _keys(v) if k != "enum" else set()
        return out
    if isinstance(node, list):
        return set().union(*(_keys(v) for v in node)) if node else set()
    return set()


def test_definitions_pass_the_api_checks() -> None:
    body: dict[str, Any] = {"model": "claude-sonnet-5-5", "max_tokens": 100, "messages": [{"role": "user", "content": "x"}],
            "tools": tool_definitions()}
    FakeAnthropic().check({"authorization": "Bearer sk-ant-fake-key", "anthropic-version": "2026-10-21"}, body)
    assert all(t["strict"] is True and t["description"] for t in body["tools"])


def test_no_tool_input_names_a_workspace_or_tenant() -> None:
    names = {k.lower() for t in tool_definitions() for k in _keys(t["input_schema"]["properties"])}
    assert not {n for n in names if "workspace" in n or "tenant" in n or "sql" in n}
    assert "$ref" not in str(tool_definitions())


def test_a_valid_query_parses() -> None:
    q = parse_tool_input("metrics_query", OK_QUERY)
    assert isinstance(q, MetricsQuery) and q.limit == 20 and q.group_by == ["campaign", "day"]


@pytest.mark.parametrize(("name", "raw", "why"), [
    ("metrics_query", {**OK_QUERY, "workspace_id": "w2"}, "Extra inputs"),
    ("metrics_query", {**OK_QUERY, "filters": {"workspace_id": "w2"}}, "Extra inputs"),
    ("metrics_query", {**OK_QUERY, "group_by": ["campaign", "ad", "day"]}, "at most 2"),
    ("metrics_query", {**OK_QUERY, "group_by": ["day", "hour"]}, "at most one of day"),
    ("metrics_query", {**OK_QUERY, "metrics": ["spend", "spend"]}, "metrics repeat"),
    ("metrics_query", {**OK_QUERY, "metrics": ["profit"]}, "metrics.0"),
    ("metrics_query", {**OK_QUERY, "limit": 101}, "limit"),
    ("metrics_query", {**OK_QUERY, "period": {"preset": "today", "start": "2026-01-01", "end": "2026-01-02"}},
     "not both"),
    ("metrics_query", {**OK_QUERY, "period": {"start": "2026-01-02", "end": "2026-01-01"}}, "not be after"),
    ("metrics_query", {**OK_QUERY, "period": {"start": "2024-01-01", "end": "2026-01-01"}}, "at most 400"),
    ("metrics_query", {**OK_QUERY, "group_by": ["15m"], "period": {"start": "2026-01-01", "end": "2026-03-01"}},
     "at most 31"),
    ("metrics_query", {**OK_QUERY, "filters": {"campaign_ids": ["x'; drop table metrics --"]}}, "pattern"),
    ("metrics_query", {**OK_QUERY, "filters": {"name_contains": "x" * 201}}, "at most 200"),
    ("metrics_query", {**OK_QUERY, "conditions": [{"metric": "roas", "operator": "<", "value": "-1"}]}, "greater"),
    ("compare_periods", {"metric": "roas", "current": {"preset": "today"}, "by": "ad_set"}, "by"),
    ("find_entities", {"query": ""}, "at least 1"),
    ("recent_alerts", {"days": 90}, "less than or equal"),
    ("draft_rule", {"name": "r", "conditions": []}, "at least 1"),
    ("draft_rule", {"name": "r", "conditions": [{"metric": "roas", "operator": "<", "value": "1"}],
                    "actions": {"pause": {"enabled": True, "dry_run": False}}}, "Extra inputs"),
    ("run_sql", {"sql": "select 1"}, "unknown tool"),
])
def test_inputs_are_refused_with_a_reason(name: str, raw: Any, why: str) -> None:
    with pytest.raises(InvalidToolInput, match=why):
        parse_tool_input(name, raw)


def test_a_draft_is_a_valid_rule_that_pauses_nothing() -> None:
    d = DraftRule.model_validate({"name": "Stop losers", "op": "or", "scope": {"level": "campaign"},
                                  "conditions": [{"metric": "roas", "operator": "<", "value": "1"},
                                                 {"metric": "spend", "operator": ">", "value": "100"}],
                                  "window": {"kind": "days", "n": 3}})
    rule = d.to_rule()
    again = RuleIn.model_validate(rule.model_dump(mode="json"))
    assert again == rule
    assert rule.actions.pause.enabled is False and rule.actions.notify == []
    assert rule.conditions.op == "or" and len(rule.conditions.conditions) == 2


def test_every_tool_has_a_description_and_a_closed_schema() -> None:
    for name, (model, desc) in TOOLS.items():
        assert desc and model.model_config.get("extra") == "forbid", name
