"""The fake Messages API, driven by the real SDK unchanged: what it streams reassembles
into the scripted turn, and each request check refuses what the real API refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.anthropic_api import FakeAnthropic, Reply, Text, Thinking, ToolUse, Turn

MODEL = "claude-sonnet-5-5"
TOOLS: Any = [{"name": "lookup", "description": "look a thing up",
                                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}},
                                                 "additionalProperties": False}}]
ASK: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic().running() as f:
        yield f


def client(fake: FakeAnthropic, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=fake.api_key, base_url=fake.url, max_retries=kw.pop("max_retries", 0), **kw)


def stream_final(c: anthropic.Anthropic, **kw: Any) -> anthropic.types.Message:
    with c.messages.stream(model=MODEL, max_tokens=1000, **kw) as s:
        for _ in s:
            pass
        return s.get_final_message()


def test_streamed_text_reassembles(fake: FakeAnthropic) -> None:
    fake.script(Turn((Text("The quick brown fox", split=(1, 4, 9)),)))
    m = stream_final(client(fake), messages=ASK)
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "The quick brown fox"  # type: ignore[union-attr]
    assert m.stop_reason == "end_turn"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                          lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                          max_leaves=8),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_tool_input_split_anywhere_reassembles(fake: FakeAnthropic, value: Any, cuts: list[int]) -> None:
    fake.script(Turn((ToolUse("lookup", {"q": value}, split=tuple(cuts)),)))
    m = stream_final(client(fake), messages=ASK, tools=TOOLS)
    (block,) = m.content
    assert block.type == "tool_use" and block.input == {"q": value}
    assert m.stop_reason == "tool_use"


def test_thinking_streams_with_its_signature_and_must_come_back_unchanged(fake: FakeAnthropic) -> None:
    fake.script(Turn((Thinking("let me see", split=3), ToolUse("lookup", {"q": "x"}))))
    c = client(fake)
    m = stream_final(c, messages=ASK, tools=TOOLS)
    thinking, use = m.content
    assert thinking.type == "thinking" and thinking.thinking == "let me see" and thinking.signature
    assert use.type == "tool_use"
    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42"}]}
    kept: Any = {"role": "assistant", "content": [thinking.model_dump(include={"type", "thinking", "signature"}),
                                             use.model_dump(include={"type", "id", "name", "input"})]}
    fake.script(Turn((Text("done"),)))
    assert c.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=[*ASK, kept, result]).stop_reason == "end_turn"

    dropped: Any = {"role": "assistant", "content": [use.model_dump(include={"type", "id", "name", "input"})]}
    with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
        c.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=[*ASK, dropped, result])
    edited: Any = {"role": "assistant", "content": [{**kept["content"][0], "thinking": "something else"}, kept["content"][1]]}
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature`"):
        c.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=[*ASK, edited, result])


def test_non_streaming_answers_json(fake: FakeAnthropic) -> None:
    fake.script(Turn((Text("hi"),), stop_reason="max_tokens"))
    m = client(fake).messages.create(model=MODEL, max_tokens=10, messages=ASK)
    assert m.stop_reason == "max_tokens" and m.content[0].text == "hi"  # type: ignore[union-attr]
    assert fake.received[-1].body.get("stream") is not True


def _use_then(use_id: str) -> Any:
    return [*ASK, {"role": "assistant", "content": [{"type": "tool_use", "id": use_id, "name": "lookup", "input": {}}]}]


@pytest.mark.parametrize(("kw", "reason"), [
    ({"messages": [*_use_then("toolu_a"), {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "x"}]}], "tools": TOOLS},
     "without `tool_result` blocks"),
    ({"messages": [*_use_then("toolu_a"), {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "x"},
        {"type": "tool_result", "tool_use_id": "toolu_zz", "content": "y"}]}], "tools": TOOLS},
     "unexpected `tool_use_id`"),
    ({"messages": [*_use_then("toolu_a"), {"role": "user", "content": [
        {"type": "text", "text": "first"}, {"type": "tool_result", "tool_use_id": "toolu_a", "content": "x"}]}],
      "tools": TOOLS}, "must come first"),
    ({"messages": ASK, "extra_body": {"temperature": 0.2}}, "sampling parameters"),
    ({"messages": ASK, "thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking budget"),
    ({"messages": ASK, "thinking": {"type": "disabled"}}, "'disabled' is not supported"),
    ({"messages": ASK, "tools": TOOLS, "tool_choice": {"type": "any"}}, "forces tool use"),
    ({"messages": [*ASK, {"role": "assistant", "content": "Sure"}]}, "prefill"),
    ({"messages": ASK, "tools": [{"name": "lookup", "input_schema": {"type": "object"}}]}, "description"),
    ({"messages": ASK, "tools": [{**TOOLS[0], "strict": True, "input_schema": {"type": "object", "properties": {
        "f": {"type": "object"}}, "additionalProperties": False}}]}, "additionalProperties"),
    ({"messages": ASK, "extra_body": {"frobnicate": 1}}, "Extra inputs are not permitted"),
])
def test_request_checks_refuse_like_the_api(fake: FakeAnthropic, kw: dict[str, Any], reason: str) -> None:
    with pytest.raises(anthropic.BadRequestError, match=reason) as exc:
        client(fake).messages.create(model=MODEL, max_tokens=4000, **kw)
    assert exc.value.type == "invalid_request_error"
    assert fake.received[-1].status == 400


def test_older_model_refuses_temperature_with_top_p(fake: FakeAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="cannot both be specified"):
        client(fake).messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=ASK,
                                     extra_body={"temperature": 0.5, "top_p": 0.9})
    fake.script(Turn((Text("ok"),)))
    client(fake).messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=ASK, extra_body={"temperature": 0.5})


def test_wrong_key_is_401_and_unknown_model_404(fake: FakeAnthropic) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(api_key="sk-nope", base_url=fake.url, max_retries=0).messages.create(
            model=MODEL, max_tokens=10, messages=ASK)
    with pytest.raises(anthropic.NotFoundError):
        client(fake).messages.create(model="claude-imaginary-9", max_tokens=10, messages=ASK)


def test_429_retry_after_is_honoured_by_the_sdk(fake: FakeAnthropic) -> None:
    n = len(fake.received)
    fake.script(Reply.rate_limited(retry_after=0.2), Turn((Text("ok"),)))
    m = client(fake, max_retries=2).messages.create(model=MODEL, max_tokens=10, messages=ASK)
    assert m.content[0].text == "ok"  # type: ignore[union-attr]
    first, second = fake.received[n:]
    assert (first.status, second.status) == (429, 200)
    # sleeping never returns early: the retry came at least retry-after later
    assert second.at - first.at >= 0.2
    assert second.headers.get("x-stainless-retry-count") == "1"


def test_in_stream_error_event_reaches_the_sdk(fake: FakeAnthropic) -> None:
    fake.script(Turn((Text("partial answer", split=2),), error_after=4))
    with pytest.raises(anthropic.APIStatusError) as exc:
        stream_final(client(fake), messages=ASK)
    assert exc.value.type == "overloaded_error"


def test_cut_stream_is_a_connection_error(fake: FakeAnthropic) -> None:
    fake.script(Turn((Text("partial answer", split=2),), cut_after=4))
    with pytest.raises(anthropic.APIConnectionError):
        stream_final(client(fake), messages=ASK)


def test_request_body_is_recorded_as_sent(fake: FakeAnthropic) -> None:
    fake.script(Turn((Text("ok"),)))
    client(fake).messages.create(model=MODEL, max_tokens=10, messages=ASK, tools=TOOLS)
    body = fake.received[-1].body
    assert body["tools"] == json.loads(json.dumps(TOOLS)) and body["messages"] == ASK
