"""One question: the tool-use loop over streaming turns, as our own events.

Per turn the model's stream is read with the SDK (``messages.stream``); when it stops
for ``tool_use``, each call is validated (``copilot.tools``), announced (``query``), run
for the caller's workspace by the injected :class:`ToolRunner`, its table shown
(``rows``) and handed back as a ``tool_result``; then the next turn.  Thinking blocks
go back unchanged (the API requires them before the tool results).

Text policy: rows come before prose.  Until a first table exists, a turn's text is held;
if the turn then calls a tool, that preamble is dropped from the answer (the model still
has it), otherwise it is released when the turn ends.  Once a table exists, text streams
as written.  All shown text goes through the number guard.

Bounds: at most ``max_tool_calls`` calls per question (a call past it gets an error
result and the next turn offers no tools, so the model must answer from what it has);
an overall deadline on an injectable :class:`Clock`, which cancels the work wherever it
is (a stalled stream included) and ends with an ``error`` event.  Cancelling the task
that consumes :func:`ask`, or closing the generator, cancels the model call: the HTTP
stream is closed, which the API sees as a disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anthropic
from anthropic import AsyncAnthropic

from copilot.client import CopilotConfig
from copilot.events import (
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    Event,
    QueryEvent,
    RowsEvent,
    RuleDraftEvent,
    Source,
    TextEvent,
    UsageTotals,
)
from copilot.guard import Allowed, NumberGuard
from copilot.pricing import request_cost
from copilot.prompt import system_prompt
from copilot.results import ResultTable, Tables, for_model, rows_formatted
from copilot.tools import InvalidToolInput, ToolInput, parse_tool_input, tool_definitions

log = logging.getLogger("metricx.copilot")


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - time.monotonic()))


@dataclass(frozen=True, slots=True)
class RuleDraftResult:
    rule: dict[str, Any]
    summary: str


class ToolFailed(Exception):
    """A tool could not answer; the message goes to the model (no internals in it)."""


ToolResult = ResultTable | RuleDraftResult
# Runs one validated tool call for the authenticated workspace (bound by the caller).
ToolRunner = Callable[[ToolInput], Awaitable[ToolResult]]


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    history: Sequence[Mapping[str, Any]] = ()  # earlier turns of the conversation (MessageParam)
    today: str | None = None  # the workspace's local date, ISO, for the system prompt
    timezone: str | None = None


async def ask(question: Question, cfg: CopilotConfig, client: AsyncAnthropic, run_tool: ToolRunner,
              clock: Clock | None = None,
              on_usage: Callable[[UsageTotals], None] | None = None) -> AsyncIterator[Event]:
    """The events of one question; the last one is ``done`` or ``error``.  ``on_usage``
    gets the question's final usage once, whatever happened - also when the consumer
    went away before the last event (the daily budget must count that too)."""
    clock = clock or MonotonicClock()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    state = _Run(question, cfg, client, run_tool, queue.put_nowait)
    worker = asyncio.create_task(state.run())
    deadline = asyncio.create_task(clock.sleep_until(clock.now() + cfg.deadline_s))
    try:
        while True:
            getter: asyncio.Task[Event] = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, deadline}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                ev = getter.result()
                yield ev
                if isinstance(ev, DoneEvent | ErrorEvent):
                    return
                continue
            getter.cancel()
            worker.cancel()
            await asyncio.gather(worker, getter, return_exceptions=True)
            while not queue.empty():  # what the work produced before the deadline
                ev = queue.get_nowait()
                if isinstance(ev, DoneEvent | ErrorEvent):
                    yield ev
                    return
                yield ev
            yield ErrorEvent("deadline", f"No answer within {cfg.deadline_s:g} seconds; try a narrower question.",
                             state.usage)
            return
    finally:
        worker.cancel()
        deadline.cancel()
        await asyncio.gather(worker, deadline, return_exceptions=True)
        if on_usage is not None:
            on_usage(state.usage)


class _Run:
    def __init__(self, q: Question, cfg: CopilotConfig, client: AsyncAnthropic, run_tool: ToolRunner,
                 emit: Callable[[Event], None]) -> None:
        self.q, self.cfg, self.client, self.run_tool, self.emit = q, cfg, client, run_tool, emit
        self.tables = Tables()
        self.usage = UsageTotals()
        self.tool_calls = 0
        self._allowed: tuple[int, Allowed] | None = None
        self.guard = NumberGuard(cell=self.tables.cell, allowed=self._allowed_now)
        self._shown_text = False

    def _allowed_now(self) -> Allowed:
        if self._allowed is None or self._allowed[0] != len(self.tables):
            self._allowed = (len(self.tables), Allowed.build(self.q.text, self.tables.dimension_values()))
        return self._allowed[1]

    def _show(self, text: str, new_block: bool = False) -> None:
        if new_block and self._shown_text:
            text = "\n\n" + text
        out = self.guard.feed(text)
        if text:
            self._shown_text = True
        if out:
            self.emit(TextEvent(out))

    async def run(self) -> None:
        try:
            await self._turns()
        except asyncio.CancelledError:
            raise
        except anthropic.APIError as exc:
            code, message = classify(exc)
            log.warning("copilot: API call failed", extra={"code": code, "error": type(exc).__name__,
                                                           "status": getattr(exc, "status_code", None),
                                                           "request_id": getattr(exc, "request_id", None)})
            self.emit(ErrorEvent(code, message, self.usage))
        except Exception:
            log.exception("copilot: internal error")
            self.emit(ErrorEvent("internal", "The copilot failed on our side; the error is logged.", self.usage))

    async def _turns(self) -> None:
        messages: list[Mapping[str, Any]] = [*self.q.history, {"role": "user", "content": self.q.text}]
        tools = tool_definitions()
        system = system_prompt(self.q.today, self.q.timezone)
        for _ in range(self.cfg.max_tool_calls + 2):
            offer_tools = self.tool_calls < self.cfg.max_tool_calls
            live = len(self.tables) > 0
            held: list[str] = []
            params: dict[str, Any] = {
                "model": self.cfg.model, "max_tokens": self.cfg.max_tokens, "system": system,
                "messages": messages, "tools": tools, "thinking": {"type": "adaptive"},
                "output_config": {"effort": self.cfg.effort},
            }
            if not offer_tools:
                params["tool_choice"] = {"type": "none"}
            turn = _TurnUsage()
            try:
                async with self.client.messages.stream(**params) as stream:
                    new_block = False
                    async for ev in stream:
                        if ev.type == "message_start":
                            turn.start(ev.message.usage)
                        elif ev.type == "message_delta":
                            turn.delta(ev.usage)
                        elif ev.type == "content_block_start" and ev.content_block.type == "text":
                            new_block = True
                        elif ev.type == "text" and ev.text:
                            if live:
                                self._show(ev.text, new_block)
                            else:
                                held.append(("\n\n" if new_block and held else "") + ev.text)
                            new_block = False
                    final = await stream.get_final_message()
            finally:
                # what the API reported, even for a turn cut by an error, the deadline or a cancel
                if turn.seen:
                    self._count(turn)
            if final.stop_reason == "tool_use":
                uses = [b for b in final.content if b.type == "tool_use"]
                results = [await self._call(u.id, u.name, u.input) for u in uses]
                messages = [*messages, {"role": "assistant", "content": _as_params(final.content)},
                            {"role": "user", "content": results}]
                continue
            if held:
                self._show("".join(held), new_block=True)
            tail = self.guard.finish()
            if tail:
                self.emit(TextEvent(tail))
            self._finish(final.stop_reason)
            return
        self.emit(ErrorEvent("tool_limit", "The question needed more steps than allowed; try a narrower one.",
                             self.usage))

    def _finish(self, stop: str | None) -> None:
        if stop in ("end_turn", "stop_sequence"):
            self.emit(DoneEvent(
                verified=self.guard.verified, masked=self.guard.masked + self.guard.bad_citations,
                citations=tuple(dict.fromkeys(self.guard.citations)), sources=self._sources(),
                usage=self.usage, model=self.cfg.model, tool_calls=self.tool_calls))
            return
        code: ErrorCode
        if stop == "max_tokens":
            code, message = "max_tokens", "The answer reached its length limit and is cut."
        elif stop == "refusal":
            code, message = "refused", "The model declined to answer this question."
        elif stop == "model_context_window_exceeded":
            code, message = "context_too_long", "This conversation is too long; start a new one."
        else:
            code, message = "upstream_error", f"The model stopped unexpectedly ({stop})."
        self.emit(ErrorEvent(code, message, self.usage))

    def _count(self, u: _TurnUsage) -> None:
        cost = request_cost(self.cfg.price, u.input_tokens, u.output_tokens, u.cache_read, u.cache_write)
        prev = self.usage
        self.usage = UsageTotals(
            input_tokens=prev.input_tokens + u.input_tokens, output_tokens=prev.output_tokens + u.output_tokens,
            cache_read_input_tokens=prev.cache_read_input_tokens + u.cache_read,
            cache_creation_input_tokens=prev.cache_creation_input_tokens + u.cache_write,
            requests=prev.requests + 1,
            cost_usd=None if cost is None or prev.cost_usd is None else prev.cost_usd + cost)

    async def _call(self, call_id: str, name: str, raw: object) -> dict[str, Any]:
        """Run one tool call; the tool_result block for the model."""
        if self.tool_calls >= self.cfg.max_tool_calls:
            return _result(call_id, f"tool-call limit ({self.cfg.max_tool_calls}) reached: answer from the "
                                    "results you have, or say what is missing", error=True)
        self.tool_calls += 1
        try:
            parsed = parse_tool_input(name, raw)
        except InvalidToolInput as exc:
            return _result(call_id, f"invalid input: {exc}", error=True)
        self.emit(QueryEvent(call_id, name, parsed.model_dump(mode="json")))
        try:
            got = await self.run_tool(parsed)
        except ToolFailed as exc:
            return _result(call_id, f"the tool failed: {exc}", error=True)
        if isinstance(got, RuleDraftResult):
            self.emit(RuleDraftEvent(call_id, got.rule, got.summary))
            return _result(call_id, f"draft shown to the user for confirmation (not saved): {got.summary}")
        tid = self.tables.add(got)
        self.emit(RowsEvent(call_id, tid, tuple(c.name for c in got.columns), tuple(c.kind for c in got.columns),
                            rows_formatted(got), got.truncated))
        return _result(call_id, for_model(tid, got))

    def _sources(self) -> tuple[Source, ...]:
        return tuple(Source(tid, t.tool, t.period_start, t.period_end, t.timezone, t.currencies(), t.freshness,
                            t.settling) for tid, t in self.tables)


@dataclass
class _TurnUsage:
    """One request's usage as the stream reports it: ``message_start`` has the input
    side, each ``message_delta`` the output so far (cumulative)."""

    seen: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def start(self, u: anthropic.types.Usage) -> None:
        self.seen = True
        self.input_tokens = u.input_tokens
        self.output_tokens = u.output_tokens
        self.cache_read = u.cache_read_input_tokens or 0
        self.cache_write = u.cache_creation_input_tokens or 0

    def delta(self, u: anthropic.types.MessageDeltaUsage) -> None:
        self.output_tokens = u.output_tokens
        if u.input_tokens is not None:
            self.input_tokens = u.input_tokens
        if u.cache_read_input_tokens is not None:
            self.cache_read = u.cache_read_input_tokens
        if u.cache_creation_input_tokens is not None:
            self.cache_write = u.cache_creation_input_tokens


def _result(call_id: str, text: str, error: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id, "content": text}
    if error:
        block["is_error"] = True
    return block


def _as_params(content: Sequence[Any]) -> list[dict[str, Any]]:
    """The assistant turn as it must go back: thinking unchanged, empty text dropped."""
    out: list[dict[str, Any]] = []
    for b in content:
        if b.type == "thinking":
            out.append({"type": "thinking", "thinking": b.thinking, "signature": b.signature})
        elif b.type == "redacted_thinking":
            out.append({"type": "redacted_thinking", "data": b.data})
        elif b.type == "text" and b.text:
            out.append({"type": "text", "text": b.text})
        elif b.type == "tool_use":
            out.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.input})
    return out


def classify(exc: anthropic.APIError) -> tuple[ErrorCode, str]:
    """An SDK error as our code and a message a merchant can read (no key, no body)."""
    kind = getattr(exc, "type", None)  # error.type of the body: HTTP and in-stream errors alike
    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout", "The AI service did not answer in time; try again."
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection", "The connection to the AI service broke; try again."
    status = getattr(exc, "status_code", None)
    if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError) \
            or kind in ("authentication_error", "permission_error"):
        return "auth", "The AI service refused METRICX_ANTHROPIC_API_KEY; an administrator must check it."
    if isinstance(exc, anthropic.RateLimitError) or kind == "rate_limit_error":
        return "rate_limited", "The AI service is rate-limiting this installation; try again in a minute."
    if status == 529 or kind == "overloaded_error":
        return "overloaded", "The AI service is overloaded right now; try again shortly."
    if isinstance(exc, anthropic.NotFoundError) or kind == "not_found_error":
        return "model_unavailable", "The configured model is not available for this API key."
    if isinstance(exc, anthropic.BadRequestError) or kind == "invalid_request_error":
        return "bad_request", "The AI service refused the request; the error is logged."
    return "upstream_error", "The AI service failed; try again."
