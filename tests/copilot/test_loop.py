"""The tool-use loop against the fake API with the SDK unchanged: event order, tool
results and thinking handed back, bounds, each fault as our typed error, the deadline
and cancellation closing the HTTP stream."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from copilot.client import CopilotConfig, make_client
from copilot.events import (
    DoneEvent,
    ErrorEvent,
    Event,
    QueryEvent,
    RowsEvent,
    RuleDraftEvent,
    TextEvent,
    UsageTotals,
)
from copilot.loop import Clock, Question, RuleDraftResult, ToolFailed, ToolResult, ask
from copilot.results import Column, ResultTable
from copilot.tools import DraftRule, MetricsQuery, ToolInput
from tests.copilot.conftest import ManualClock
from tests.fakes.anthropic_api import FakeAnthropic, Reply, Text, Thinking, ToolUse, Turn, Usage

QUERY = {"metrics": ["spend", "roas"], "group_by": ["campaign"], "period": {"preset": "last_7_days"}}
TABLE = ResultTable(
    "metrics_query",
    (Column("campaign", "text"), Column("spend", "money"), Column("roas", "multiple")),
    (("Summer Sale 2026", Decimal("1234.505"), Decimal("3.2149")), ("Brand", Decimal("80"), None)),
    currency="EUR", period_start=date(2026, 12, 1), period_end=date(2026, 12, 7), timezone="Europe/Paris",
)


def cfg(fake: FakeAnthropic, **kw: Any) -> CopilotConfig:
    return CopilotConfig(api_key=fake.api_key, base_url=fake.url, **{"max_retries": 0, **kw})


class Runner:
    """Answers tool calls with fixed results and records what it was asked."""

    def __init__(self, result: ToolResult = TABLE, fail: str | None = None) -> None:
        self.result, self.fail = result, fail
        self.calls: list[ToolInput] = []

    async def __call__(self, call: ToolInput) -> ToolResult:
        self.calls.append(call)
        if self.fail:
            raise ToolFailed(self.fail)
        return self.result


def run(c: CopilotConfig, text: str, runner: Runner | None = None, clock: Clock | None = None,
        during: Callable[[list[Event]], Awaitable[None]] | None = None) -> list[Event]:
    async def go() -> list[Event]:
        client = make_client(c)
        try:
            events = [ev async for ev in ask(Question(text, today="2026-12-07", timezone="Europe/Paris"), c, client,
                                             runner or Runner(), clock)]
        finally:
            await client.close()
        return events
    return asyncio.run(go())


def kinds(events: list[Event]) -> list[str]:
    """Event kinds in order, consecutive text events counted once."""
    out: list[str] = []
    for e in events:
        if not (e.kind == "text" and out and out[-1] == "text"):
            out.append(e.kind)
    return out


def answer(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextEvent))


def test_tool_call_then_cited_answer(fake: FakeAnthropic) -> None:
    fake.script(
        Turn((Thinking(""), Text("Let me look at 7 days of data."), ToolUse("metrics_query", QUERY, split=(3, 10, 11))),
             usage=Usage(input_tokens=1000, output_tokens=50)),
        Turn((Text("{{t1.r1.campaign}} spent {{t1.r1.spend}} at ROAS {{t1.r1.roas}}; Brand's ROAS is {{t1.r2.roas}}.",
                   split=5),), usage=Usage(input_tokens=2000, output_tokens=80, cache_read_input_tokens=500)),
    )
    runner = Runner()
    events = run(cfg(fake), "How did my campaigns do in the last 7 days?", runner)
    assert kinds(events) == ["query", "rows", "text", "done"]
    q = events[0]
    assert isinstance(q, QueryEvent) and q.tool == "metrics_query" and q.input["group_by"] == ["campaign"]
    assert runner.calls == [MetricsQuery.model_validate(QUERY)]
    rows = events[1]
    assert isinstance(rows, RowsEvent) and rows.table == "t1"
    assert rows.rows[0] == ("Summer Sale 2026", "1,234.51 EUR", "3.21x")
    # the preamble (before any rows) is not shown; the cited values are the table's
    assert answer(events) == "Summer Sale 2026 spent 1,234.51 EUR at ROAS 3.21x; Brand's ROAS is n/a."
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.verified and done.masked == 0 and done.tool_calls == 1
    assert [c.ref for c in done.citations] == ["t1.r1.campaign", "t1.r1.spend", "t1.r1.roas", "t1.r2.roas"]
    (src,) = done.sources
    assert (src.period_start, src.period_end, src.timezone, src.currencies) == \
        (date(2026, 12, 1), date(2026, 12, 7), "Europe/Paris", ("EUR",))
    # usage is the API's, summed; the cost is Sonnet 5.5's price list worked by hand
    assert (done.usage.input_tokens, done.usage.output_tokens, done.usage.cache_read_input_tokens,
            done.usage.requests) == (3000, 130, 500, 2)
    assert done.usage.cost_usd == Decimal("0.00735")  # (3000*2 + 130*10 + 500*0.10) / 1e6
    # the second request answered the tool_use id and handed the thinking back first
    second = fake.received[1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"][0]["type"] == "thinking"
    use_id = second[1]["content"][-1]["id"]
    (result,) = second[2]["content"]
    assert result["tool_use_id"] == use_id and "is_error" not in result
    sent = json.loads(result["content"])
    assert sent["table"] == "t1" and sent["rows"][0]["ref"] == "t1.r1" and sent["rows"][0]["spend"] == "1234.505"
    assert all(r.status == 200 for r in fake.received)


def test_two_tool_rounds_keep_thinking_and_number_tables(fake: FakeAnthropic) -> None:
    other = ResultTable("metrics_query", (Column("day", "date"), Column("clicks", "count")),
                        ((date(2026, 12, 2), 1500),), period_start=date(2026, 12, 2), period_end=date(2026, 12, 2))
    results = iter([TABLE, other])

    class Two(Runner):
        async def __call__(self, call: ToolInput) -> ToolResult:
            self.calls.append(call)
            return next(results)

    fake.script(Turn((Thinking("first"), ToolUse("metrics_query", QUERY))),
                Turn((Thinking("second"), Text("Now by day."), ToolUse("metrics_query", QUERY))),
                Turn((Text("On 2026-12-02 you had {{t2.r1.clicks}} clicks; {{t1.r1.campaign}} led."),)))
    events = run(cfg(fake), "clicks by day?", Two())
    assert kinds(events) == ["query", "rows", "text", "query", "rows", "text", "done"]
    assert [e.table for e in events if isinstance(e, RowsEvent)] == ["t1", "t2"]
    # text written after the first rows is shown, before the second query
    assert answer(events) == "Now by day.\n\nOn 2026-12-02 you had 1,500 clicks; Summer Sale 2026 led."
    third = fake.received[2].body["messages"]
    assert [m["content"][0]["type"] for m in third if m["role"] == "assistant"] == ["thinking", "thinking"]
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.verified and len(done.sources) == 2


def test_request_shape_suits_current_models(fake: FakeAnthropic) -> None:
    fake.script(Turn((Text("I can only answer about your ad metrics."),)))
    events = run(cfg(fake), "What's the weather?")
    assert kinds(events) == ["text", "done"]
    body = fake.received[0].body
    assert body["model"] == "claude-sonnet-5-5" and body["thinking"] == {"type": "adaptive"}
    assert "tool_choice" not in body and not {"temperature", "top_p", "top_k"} & set(body)
    assert {t["name"] for t in body["tools"]} == {"metrics_query", "compare_periods", "find_entities",
                                                  "recent_alerts", "draft_rule"}
    assert "{{t1.r2.spend}}" in body["system"]


def test_uncited_figures_are_masked_and_the_answer_unverified(fake: FakeAnthropic) -> None:
    fake.script(Turn((ToolUse("metrics_query", QUERY),)),
                Turn((Text("Top 2 by spend: {{t1.r1.campaign}} with about 1,200 EUR, up 15%."),)))
    events = run(cfg(fake), "What are my top 2 campaigns?")
    assert answer(events) == "Top 2 by spend: Summer Sale 2026 with about ▒▒ EUR, up ▒▒."
    done = events[-1]
    assert isinstance(done, DoneEvent) and not done.verified and done.masked == 2


def test_invalid_tool_input_goes_back_as_an_error_result(fake: FakeAnthropic) -> None:
    bad = {**QUERY, "workspace_id": "someone-else"}
    fake.script(Turn((ToolUse("metrics_query", bad),)), Turn((ToolUse("metrics_query", QUERY),)),
                Turn((Text("Done: {{t1.r1.spend}}"),)))
    runner = Runner()
    events = run(cfg(fake), "spend?", runner)
    assert kinds(events)[0:2] == ["query", "rows"] and len(runner.calls) == 1
    first_result = fake.received[1].body["messages"][-1]["content"][0]
    assert first_result["is_error"] is True and "workspace_id" in first_result["content"]
    assert answer(events) == "Done: 1,234.51 EUR"


def test_tool_failure_goes_back_to_the_model(fake: FakeAnthropic) -> None:
    fake.script(Turn((ToolUse("metrics_query", QUERY),)), Turn((Text("I could not read the data."),)))
    events = run(cfg(fake), "spend?", Runner(fail="the metrics store is unavailable"))
    assert kinds(events) == ["query", "text", "done"]
    result = fake.received[1].body["messages"][-1]["content"][0]
    assert result["is_error"] is True and "unavailable" in result["content"]


def test_tool_calls_are_bounded(fake: FakeAnthropic) -> None:
    fake.script(Turn((ToolUse("metrics_query", QUERY), ToolUse("metrics_query", QUERY))),
                Turn((Text("From what I have: {{t1.r1.spend}}."),)))
    runner = Runner()
    events = run(cfg(fake, max_tool_calls=1), "spend?", runner)
    assert len(runner.calls) == 1 and kinds(events) == ["query", "rows", "text", "done"]
    results = fake.received[1].body["messages"][-1]["content"]
    assert "is_error" not in results[0] and results[1]["is_error"] is True and "limit" in results[1]["content"]
    assert fake.received[1].body["tool_choice"] == {"type": "none"}  # no tools offered any more


def test_a_model_that_keeps_calling_tools_ends_with_tool_limit(fake: FakeAnthropic) -> None:
    # the fake ignores tool_choice none: a runaway model still ends the question
    fake.script(*[Turn((ToolUse("metrics_query", QUERY),)) for _ in range(4)])
    events = run(cfg(fake, max_tool_calls=2), "spend?")
    err = events[-1]
    assert isinstance(err, ErrorEvent) and err.code == "tool_limit" and err.usage.requests == 4


def test_rule_draft_is_shown_never_saved(fake: FakeAnthropic) -> None:
    draft = {"name": "Stop losers", "conditions": [{"metric": "roas", "operator": "<", "value": "1"}]}
    rule = DraftRule.model_validate(draft).to_rule()
    fake.script(Turn((ToolUse("draft_rule", draft),)), Turn((Text("Here is a draft for you to confirm."),)))
    runner = Runner(result=RuleDraftResult(rule.model_dump(mode="json"), "roas < 1"))
    events = run(cfg(fake), "Draft a rule that flags ROAS below 1", runner)
    assert kinds(events) == ["query", "rule_draft", "text", "done"]
    ev = events[1]
    assert isinstance(ev, RuleDraftEvent) and ev.rule["actions"]["pause"]["enabled"] is False


# ---- faults -> typed error events -------------------------------------------------------


@pytest.mark.parametrize(("script", "code", "requests"), [
    ([Reply.unauthorized()], "auth", 1),
    ([Reply.rate_limited(0.01)] * 3, "rate_limited", 3),
    ([Reply.overloaded(0.01)] * 3, "overloaded", 3),
    ([Reply(500, "api_error", "Internal server error")] * 3, "upstream_error", 3),
    ([Turn((Text("partial", split=2),), error_after=3)], "overloaded", 1),
    ([Turn((Text("partial", split=2),), error_after=3, error_type="api_error", error_message="boom")],
     "upstream_error", 1),
    ([Turn((Text("partial", split=2),), cut_after=3)], "connection", 1),
])
def test_faults_become_typed_errors(fake: FakeAnthropic, script: list[Any], code: str, requests: int) -> None:
    fake.script(*script)
    events = run(cfg(fake, max_retries=2), "spend?")
    err = events[-1]
    assert isinstance(err, ErrorEvent) and err.code == code, err
    assert len(fake.received) == requests and fake.pending == 0
    assert fake.api_key not in err.message


def test_a_stalled_stream_hits_the_read_timeout(fake: FakeAnthropic) -> None:
    gate = threading.Event()
    fake.script(Turn((Text("never finished", split=2),), gate=gate, gate_after=3))
    events = run(cfg(fake, timeout_s=0.3), "spend?")
    gate.set()
    err = events[-1]
    assert isinstance(err, ErrorEvent) and err.code == "timeout" and err.retryable
    assert err.usage.requests == 1


def test_retries_absorb_a_429_and_a_529(fake: FakeAnthropic) -> None:
    fake.script(Reply.rate_limited(0.01), Reply.overloaded(0.01), Turn((Text("Nothing to report."),)))
    events = run(cfg(fake, max_retries=2), "anything new?")
    assert kinds(events) == ["text", "done"] and [r.status for r in fake.received] == [429, 529, 200]


def test_unknown_model_is_model_unavailable(fake: FakeAnthropic) -> None:
    events = run(cfg(fake, model="claude-imaginary-9"), "spend?")
    err = events[-1]
    assert isinstance(err, ErrorEvent) and err.code == "model_unavailable"


def test_max_tokens_ends_with_an_error_after_the_text(fake: FakeAnthropic) -> None:
    fake.script(Turn((ToolUse("metrics_query", QUERY),)),
                Turn((Text("{{t1.r1.campaign}} spent {{t1.r1.spend}} and the rest"),), stop_reason="max_tokens"))
    events = run(cfg(fake), "spend?")
    assert kinds(events)[-1] == "error" and "text" in kinds(events)
    err = events[-1]
    assert isinstance(err, ErrorEvent) and err.code == "max_tokens" and err.usage.requests == 2
    assert answer(events) == "Summer Sale 2026 spent 1,234.51 EUR and the rest"


def test_cheaper_model_is_selectable_and_priced(fake: FakeAnthropic) -> None:
    fake.script(Turn((Text("Nothing to report."),), usage=Usage(input_tokens=10_000, output_tokens=100)))
    events = run(cfg(fake, model="claude-haiku-5-5"), "news?")
    done = events[-1]
    assert isinstance(done, DoneEvent) and fake.received[0].body["model"] == "claude-haiku-5-5"
    assert done.usage.cost_usd == Decimal("0.00105")  # 10000*0.10/1e6 + 100*0.50/1e6


# ---- deadline and cancellation ------------------------------------------------------------


def test_deadline_cancels_a_stalled_stream(fake: FakeAnthropic) -> None:
    gate = threading.Event()
    fake.script(Turn((Text("I am thinking about it", split=3),), gate=gate, gate_after=3))
    clock = ManualClock()
    c = cfg(fake, deadline_s=30)

    async def go() -> list[Event]:
        client = make_client(c)
        events: list[Event] = []

        async def consume() -> None:
            async for ev in ask(Question("spend?"), c, client, Runner(), clock):
                events.append(ev)  # noqa: PERF401  (kept as they come: the task is cancelled midway)

        task = asyncio.create_task(consume())
        (rec,) = await asyncio.to_thread(fake.wait_requests, 1)
        assert await asyncio.to_thread(rec.at_gate.wait, 10)
        clock.advance(29)
        await asyncio.sleep(0)
        assert not task.done()
        clock.advance(1)
        await task
        # seen while the client is still open: the deadline itself closed the stream
        assert await asyncio.to_thread(rec.disconnected.wait, 10), "the fake never saw the client leave"
        await client.close()
        return events

    events = asyncio.run(go())
    gate.set()
    err = events[-1]
    assert isinstance(err, ErrorEvent) and err.code == "deadline"
    assert (err.usage.requests, err.usage.input_tokens) == (1, 100)  # reported at message_start


def test_cancelling_the_consumer_closes_the_http_stream(fake: FakeAnthropic) -> None:
    gate = threading.Event()
    fake.script(Turn((ToolUse("metrics_query", QUERY),)),
                Turn((Text("{{t1.r1.spend}} so far and then", split=4),), gate=gate, gate_after=4))
    c = cfg(fake)
    totals: list[UsageTotals] = []

    async def go() -> list[Event]:
        client = make_client(c)
        events: list[Event] = []

        async def consume() -> None:
            async for ev in ask(Question("spend?"), c, client, Runner(), on_usage=totals.append):
                events.append(ev)  # noqa: PERF401  (kept as they come: the task is cancelled midway)

        task = asyncio.create_task(consume())
        recs = await asyncio.to_thread(fake.wait_requests, 2)
        assert await asyncio.to_thread(recs[1].at_gate.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # seen while the client is still open: the cancel itself closed the stream
        assert await asyncio.to_thread(recs[1].disconnected.wait, 10), "the fake never saw the client leave"
        await client.close()
        return events

    events = asyncio.run(go())
    gate.set()
    assert kinds(events)[:2] == ["query", "rows"] and "done" not in kinds(events)
    # the budget still learns what the API reported, the cut turn's input included
    (u,) = totals
    assert (u.requests, u.input_tokens, u.output_tokens) == (2, 100 + 100, 20 + 1)


def test_slow_deltas_arrive_in_order(fake: FakeAnthropic) -> None:
    fake.script(Turn((ToolUse("metrics_query", QUERY),)),
                Turn((Text("{{t1.r1.campaign}} leads with {{t1.r1.spend}}.", split=3),), delay_s=0.002))
    events = run(cfg(fake), "who leads?")
    assert answer(events) == "Summer Sale 2026 leads with 1,234.51 EUR."
    assert len([e for e in events if isinstance(e, TextEvent)]) > 3  # streamed, not in one piece
    assert kinds(events) == ["query", "rows", "text", "done"]
