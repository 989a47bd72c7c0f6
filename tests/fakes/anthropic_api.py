"""A local HTTP server playing the Anthropic Messages API for the real ``anthropic`` SDK.

``POST /v1/messages`` answers scripted turns, as JSON or as the real server-sent events
(``message_start``, ``ping``, ``content_block_start`` / ``_delta`` / ``_stop`` with
``text_delta``, ``input_json_delta`` split wherever the test says, ``thinking_delta`` +
``signature_delta``, then ``message_delta`` with the usage and stop reason, and
``message_stop``), sent as HTTP/1.1 chunks like the real API.

A test scripts one entry per HTTP request, in order, retries included: a :class:`Turn`
(what the model "says") or a :class:`Reply` (an HTTP error: 429 with ``retry-after``,
529 ``overloaded_error``, 401 ``authentication_error``...).  A turn can also fail inside
its stream: an ``error`` event (``error_after``), a connection cut mid-event
(``cut_after``), slow deltas (``delay_s``) or a gate the test opens (``gate``); while a
stream waits at its gate the fake watches the socket, so a client that goes away is
seen (:attr:`Received.disconnected`) without any timing assumption.

Every request is recorded and checked the way the current API checks it, and a broken
one gets the real API's ``400 invalid_request_error`` (the check's text is kept in
:attr:`Received.error`): known top-level fields only, tool definitions with name,
description and an object ``input_schema`` (``additionalProperties: false`` everywhere
under ``strict``), each ``tool_result`` answering a ``tool_use`` id of the assistant turn
just before and every ``tool_use`` answered in the next turn, ``tool_result`` blocks
first, thinking blocks handed back unchanged (the signature must be one this fake
issued for that text) and leading the last assistant turn that used tools, and the
settings the current models refuse (sampling parameters, thinking budgets, thinking
``disabled``, forced tool choice, assistant prefill).  The key arrives as
``x-api-key`` or ``Authorization: Bearer`` (what SDK 2.x sends); a wrong one is a 401.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_VERSION_HEADER = "anthropic-version"
# The models of the SDK's list that this fake serves.  The "current" ones get the checks
# their documentation announces (each answers 400 when violated).
CURRENT_MODELS = frozenset({"claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-5-5", "claude-sonnet-5"})
OLDER_MODELS = frozenset({"claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"})
# Top-level request fields the Messages API knows (SDK 2.17 ``messages.create`` body).
KNOWN_FIELDS = frozenset({
    "max_tokens", "messages", "model", "cache_control", "container", "diagnostics", "inference_geo",
    "metadata", "output_config", "service_tier", "speed", "stop_sequences", "stream", "system",
    "thinking", "tool_choice", "tools",
})
SAMPLING = ("temperature", "top_p", "top_k")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


# ---- the script -------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str
    # Where the text_delta events split it: a chunk size, or explicit cut positions.
    split: int | tuple[int, ...] = 12


@dataclass(frozen=True)
class ToolUse:
    name: str
    input: dict[str, Any]
    id: str | None = None  # default: toolu_fake_<n>
    # Where the input_json_delta events split the JSON text (a chunk size or cut positions);
    # like the real API, an empty partial_json comes first.
    split: int | tuple[int, ...] = 7
    raw_json: str | None = None  # send this JSON text instead of json.dumps(input)


@dataclass(frozen=True)
class Thinking:
    thinking: str  # "" is what display "omitted" streams
    split: int | tuple[int, ...] = 16


Block = Text | ToolUse | Thinking


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 100
    output_tokens: int = 20
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


@dataclass(frozen=True)
class Turn:
    blocks: tuple[Block, ...]
    stop_reason: str | None = None  # default: "tool_use" if the turn uses a tool, else "end_turn"
    usage: Usage = field(default_factory=Usage)
    # faults and pacing, counted in SSE events written (message_start is event 0)
    error_after: int | None = None  # then an in-stream ``error`` event and the end of the body
    error_type: str = "overloaded_error"
    error_message: str = "Overloaded"
    cut_after: int | None = None  # then half of the next event and the connection closed
    delay_s: float = 0.0  # before every event after message_start
    gate: threading.Event | None = None  # wait for it before event ``gate_after``
    gate_after: int = 2
    omit_ping: bool = False

    @property
    def stop(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"


@dataclass(frozen=True)
class Reply:
    """An HTTP error answer (one request)."""

    status: int
    error_type: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def rate_limited(retry_after: float = 0.01) -> Reply:
        return Reply(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
                     (("retry-after", f"{retry_after:g}"),))

    @staticmethod
    def overloaded(retry_after: float | None = 0.01) -> Reply:
        hdrs = (("retry-after", f"{retry_after:g}"),) if retry_after is not None else ()
        return Reply(529, "overloaded_error", "Overloaded", hdrs)

    @staticmethod
    def unauthorized() -> Reply:
        return Reply(401, "authentication_error", "invalid x-api-key")


Scripted = Turn | Reply


@dataclass
class Received:
    """One request as it arrived, and what the fake did with it."""

    headers: dict[str, str]
    body: dict[str, Any]
    at: float = 0.0  # time.monotonic() on arrival
    status: int = 0
    error: str | None = None  # why the fake refused it (400/401/404)
    events_sent: int = 0
    at_gate: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


class RequestInvalid(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


# ---- the fake ---------------------------------------------------------------------------


class FakeAnthropic:
    def __init__(self, api_key: str = "sk-ant-fake-key") -> None:
        self.api_key = api_key
        self.received: list[Received] = []
        self._script: list[Scripted] = []
        self._cond = threading.Condition()
        self._ids = 0
        # signature -> (model, thinking text) for every thinking block this fake issued
        self._signatures: dict[str, tuple[str, str]] = {}
        # tool_use id -> signatures of the thinking blocks issued in the same turn
        self._turn_thinking: dict[str, tuple[str, ...]] = {}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *entries: Scripted) -> None:
        with self._cond:
            self._script.extend(entries)

    @property
    def pending(self) -> int:
        """Scripted entries not consumed yet."""
        with self._cond:
            return len(self._script)

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[Received]:
        """Block until ``n`` requests have arrived (a safety timeout, not a speed bound)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= n, timeout):
                raise AssertionError(f"expected {n} requests, got {len(self.received)}")
            return list(self.received)

    # -- checks ---------------------------------------------------------------------------

    def check(self, headers: dict[str, str], body: Any) -> None:
        """Raise :class:`RequestInvalid` the way the real API answers a bad request."""
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        if not key:
            raise RequestInvalid(401, "authentication_error", "x-api-key header is required")
        if key != self.api_key:
            raise RequestInvalid(401, "authentication_error", "invalid x-api-key")
        if not headers.get(API_VERSION_HEADER):
            raise RequestInvalid(400, "invalid_request_error", "anthropic-version: header is required")
        if not isinstance(body, dict):
            raise RequestInvalid(400, "invalid_request_error", "request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestInvalid(400, "invalid_request_error", "model: Field required")
        if model not in CURRENT_MODELS | OLDER_MODELS:
            raise RequestInvalid(404, "not_found_error", f"model: {model}")
        current = model in CURRENT_MODELS
        for key_ in body:
            if key_ in SAMPLING and current:
                raise RequestInvalid(400, "invalid_request_error",
                                     f"`{key_}` is not supported for {model}; sampling parameters must be left out")
        if "temperature" in body and "top_p" in body:
            raise RequestInvalid(400, "invalid_request_error",
                                 "`temperature` and `top_p` cannot both be specified for this model. Please use only one.")
        unknown = sorted(set(body) - KNOWN_FIELDS - set(SAMPLING))
        if unknown:
            raise RequestInvalid(400, "invalid_request_error", f"{unknown[0]}: Extra inputs are not permitted")
        mt = body.get("max_tokens")
        if not isinstance(mt, int) or isinstance(mt, bool) or not 1 <= mt <= 128_000:
            raise RequestInvalid(400, "invalid_request_error", "max_tokens: must be an integer between 1 and 128000")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise RequestInvalid(400, "invalid_request_error", "stream: Input should be a valid boolean")
        tools = self._check_tools(body.get("tools"))
        thinking_on = self._check_thinking(body.get("thinking"), model, mt)
        self._check_tool_choice(body.get("tool_choice"), tools, model, thinking_on)
        self._check_messages(body.get("messages"), tools, model, thinking_on)

    def _check_tools(self, tools: Any) -> set[str]:
        if tools is None:
            return set()
        if not isinstance(tools, list):
            raise RequestInvalid(400, "invalid_request_error", "tools: Input should be a valid list")
        names: set[str] = set()
        for i, t in enumerate(tools):
            where = f"tools.{i}"
            if not isinstance(t, dict):
                raise RequestInvalid(400, "invalid_request_error", f"{where}: Input should be an object")
            name = t.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                raise RequestInvalid(400, "invalid_request_error",
                                     f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            if name in names:
                raise RequestInvalid(400, "invalid_request_error", f"tools: Tool names must be unique ({name})")
            names.add(name)
            desc = t.get("description")
            if not isinstance(desc, str) or not desc.strip():
                raise RequestInvalid(400, "invalid_request_error",
                                     f"{where}.description: a description is required (fake's rule)")
            schema = t.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise RequestInvalid(400, "invalid_request_error", f"{where}.input_schema.type: Input should be 'object'")
            extra = set(t) - {"name", "description", "input_schema", "strict", "cache_control", "type",
                              "input_examples", "eager_input_streaming", "defer_loading", "allowed_callers"}
            if extra:
                raise RequestInvalid(400, "invalid_request_error", f"{where}.{sorted(extra)[0]}: Extra inputs are not permitted")
            if t.get("strict") is True:
                loose = _loose_object(schema, f"{where}.input_schema")
                if loose:
                    raise RequestInvalid(400, "invalid_request_error",
                                         f"{loose}: strict tools need 'additionalProperties': false on every object")
        return names

    def _check_thinking(self, thinking: Any, model: str, max_tokens: int) -> bool:
        """Whether the model thinks on this request."""
        current = model in CURRENT_MODELS
        if thinking is None:
            return current  # thinking is on by default on the current models
        if not isinstance(thinking, dict):
            raise RequestInvalid(400, "invalid_request_error", "thinking: Input should be an object")
        kind = thinking.get("type")
        if kind not in ("enabled", "adaptive", "disabled", "between_tools"):
            raise RequestInvalid(400, "invalid_request_error",
                                 "thinking.type: Input should be 'enabled', 'adaptive', 'disabled' or 'between_tools'")
        if thinking.get("display") not in (None, "summarized", "omitted"):
            raise RequestInvalid(400, "invalid_request_error", "thinking.display: Input should be 'summarized' or 'omitted'")
        if kind == "enabled":
            if current:
                raise RequestInvalid(400, "invalid_request_error",
                                     f"thinking.type 'enabled' (a thinking budget) is not supported for {model}; "
                                     "use thinking.type 'adaptive'")
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or budget < 1024 or budget >= max_tokens:
                raise RequestInvalid(400, "invalid_request_error",
                                     "thinking.budget_tokens: must be >= 1024 and less than max_tokens")
        elif "budget_tokens" in thinking:
            raise RequestInvalid(400, "invalid_request_error", "thinking.budget_tokens: Extra inputs are not permitted")
        if kind == "disabled" and current:
            raise RequestInvalid(400, "invalid_request_error",
                                 f"thinking.type 'disabled' is not supported for {model}; use 'between_tools'")
        return bool(kind != "disabled")

    def _check_tool_choice(self, choice: Any, tools: set[str], model: str, thinking_on: bool) -> None:
        if choice is None:
            return
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            raise RequestInvalid(400, "invalid_request_error", "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if choice["type"] == "tool" and choice.get("name") not in tools:
            raise RequestInvalid(400, "invalid_request_error", f"tool_choice.name: no tool named {choice.get('name')!r}")
        if choice["type"] in ("any", "tool") and (model in CURRENT_MODELS or thinking_on):
            raise RequestInvalid(400, "invalid_request_error",
                                 "Thinking may not be enabled when tool_choice forces tool use.")

    def _check_messages(self, messages: Any, tools: set[str], model: str, thinking_on: bool) -> None:
        if not isinstance(messages, list) or not messages:
            raise RequestInvalid(400, "invalid_request_error", "messages: at least one message is required")
        blocks: list[list[dict[str, Any]]] = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise RequestInvalid(400, "invalid_request_error", f"messages.{i}.role: Input should be 'user' or 'assistant'")
            content = m.get("content")
            if isinstance(content, str):
                blocks.append([{"type": "text", "text": content}])
            elif isinstance(content, list) and content and all(isinstance(b, dict) for b in content):
                blocks.append(content)
            else:
                raise RequestInvalid(400, "invalid_request_error", f"messages.{i}.content: must be a string or a list of blocks")
        if messages[0]["role"] != "user":
            raise RequestInvalid(400, "invalid_request_error", "messages.0.role: the first message must use the user role")
        if messages[-1]["role"] != "user" and model in CURRENT_MODELS:
            raise RequestInvalid(400, "invalid_request_error",
                                 "This model does not support assistant message prefill. The conversation must end with a user message.")
        for i, (m, bs) in enumerate(zip(messages, blocks, strict=True)):
            uses = [b for b in bs if b.get("type") == "tool_use"]
            results = [b for b in bs if b.get("type") == "tool_result"]
            if (uses or results) and not tools:
                raise RequestInvalid(400, "invalid_request_error",
                                     "Requests which include `tool_use` or `tool_result` blocks must define tools.")
            if m["role"] == "assistant":
                for j, b in enumerate(bs):
                    if b.get("type") == "tool_use" and b.get("name") not in tools:
                        raise RequestInvalid(400, "invalid_request_error",
                                             f"messages.{i}.content.{j}: tool_use names an unknown tool {b.get('name')!r}")
                    if b.get("type") == "thinking":
                        issued = self._signatures.get(str(b.get("signature")))
                        if issued is None or issued != (model, b.get("thinking")):
                            raise RequestInvalid(400, "invalid_request_error",
                                                 f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
                if uses:
                    nxt = blocks[i + 1] if i + 1 < len(blocks) else []
                    answered = {b.get("tool_use_id") for b in nxt if b.get("type") == "tool_result"}
                    missing = [str(u.get("id")) for u in uses if u.get("id") not in answered]
                    if missing:
                        raise RequestInvalid(400, "invalid_request_error",
                                             f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                                             f"immediately after: {', '.join(missing)}. Each `tool_use` block must have "
                                             "a corresponding `tool_result` block in the next message.")
            if m["role"] == "user" and results:
                prev = blocks[i - 1] if i > 0 and messages[i - 1]["role"] == "assistant" else []
                ids = {b.get("id") for b in prev if b.get("type") == "tool_use"}
                for j, b in enumerate(bs):
                    if b.get("type") != "tool_result":
                        if any(x.get("type") == "tool_result" for x in bs[j:]):
                            raise RequestInvalid(400, "invalid_request_error",
                                                 f"messages.{i}.content.{j}: `tool_result` blocks must come first "
                                                 "in the user message")
                        continue
                    if b.get("tool_use_id") not in ids:
                        raise RequestInvalid(400, "invalid_request_error",
                                             f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                                             f"blocks: {b.get('tool_use_id')}. Each `tool_result` block must have a "
                                             "corresponding `tool_use` block in the previous message.")
                    c = b.get("content")
                    if not (c is None or isinstance(c, str | list)):
                        raise RequestInvalid(400, "invalid_request_error", f"messages.{i}.content.{j}.content: invalid")
        if thinking_on:
            self._check_thinking_kept(messages, blocks)

    def _check_thinking_kept(self, messages: list[dict[str, Any]], blocks: list[list[dict[str, Any]]]) -> None:
        """The last assistant turn that used tools must come back with its thinking first."""
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            return
        bs = blocks[last]
        uses = [b for b in bs if b.get("type") == "tool_use"]
        if not uses:
            return
        expected = self._turn_thinking.get(str(uses[0].get("id")), ())
        if not expected:
            return
        if bs[0].get("type") not in ("thinking", "redacted_thinking"):
            raise RequestInvalid(400, "invalid_request_error",
                                 f"messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                                 f"`{bs[0].get('type')}`. When `thinking` is enabled, a final `assistant` message must "
                                 "start with a thinking block (preceding the lastmost set of `tool_use` and "
                                 "`tool_result` blocks).")
        sent = {b.get("signature") for b in bs if b.get("type") == "thinking"}
        if not set(expected) <= sent:
            raise RequestInvalid(400, "invalid_request_error",
                                 f"messages.{last}: thinking blocks must be passed back unchanged")

    # -- answers --------------------------------------------------------------------------

    def _next(self) -> Scripted:
        with self._cond:
            if not self._script:
                return Reply(500, "api_error", "fake: nothing scripted for this request")
            return self._script.pop(0)

    def _new_id(self, prefix: str) -> str:
        with self._cond:
            self._ids += 1
            return f"{prefix}_fake_{self._ids:04d}"

    def _sign(self, model: str, text: str) -> str:
        sig = "sig_" + hashlib.sha256(f"{model}\0{text}\0{self._new_id('s')}".encode()).hexdigest()[:40]
        with self._cond:
            self._signatures[sig] = (model, text)
        return sig

    def render(self, turn: Turn, model: str, offered: set[str]) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        """The whole message and its SSE events, ids and signatures drawn now."""
        msg_id = self._new_id("msg")
        content: list[dict[str, Any]] = []
        events: list[tuple[str, dict[str, Any]]] = []
        start_usage = {"input_tokens": turn.usage.input_tokens, "output_tokens": 1,
                       "cache_read_input_tokens": turn.usage.cache_read_input_tokens,
                       "cache_creation_input_tokens": turn.usage.cache_creation_input_tokens}
        events.append(("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}}))
        if not turn.omit_ping:
            events.append(("ping", {"type": "ping"}))
        signatures: list[str] = []
        tool_ids: list[str] = []
        for index, b in enumerate(turn.blocks):
            if isinstance(b, Text):
                content.append({"type": "text", "text": b.text})
                events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": {"type": "text", "text": ""}}))
                events.extend(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": piece}})
                              for piece in _pieces(b.text, b.split))
            elif isinstance(b, Thinking):
                sig = self._sign(model, b.thinking)
                signatures.append(sig)
                content.append({"type": "thinking", "thinking": b.thinking, "signature": sig})
                events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": {"type": "thinking", "thinking": "", "signature": ""}}))
                events.extend(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "thinking_delta", "thinking": piece}})
                              for piece in _pieces(b.thinking, b.split))
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "signature_delta", "signature": sig}}))
            else:
                if b.name not in offered:
                    raise RequestInvalid(500, "api_error", f"fake: scripted tool {b.name!r} was not offered")
                tid = b.id or self._new_id("toolu")
                tool_ids.append(tid)
                content.append({"type": "tool_use", "id": tid, "name": b.name, "input": b.input})
                events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                       "content_block": {"type": "tool_use", "id": tid, "name": b.name,
                                                                         "input": {}}}))
                raw = b.raw_json if b.raw_json is not None else json.dumps(b.input)
                events.extend(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "input_json_delta", "partial_json": piece}})
                              for piece in ["", *_pieces(raw, b.split)])
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        with self._cond:
            for tid in tool_ids:
                self._turn_thinking[tid] = tuple(signatures)
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": turn.stop, "stop_sequence": None},
                                         "usage": {"output_tokens": turn.usage.output_tokens}}))
        events.append(("message_stop", {"type": "message_stop"}))
        message = {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": content,
                   "stop_reason": turn.stop, "stop_sequence": None,
                   "usage": {**start_usage, "output_tokens": turn.usage.output_tokens}}
        return message, events

    @contextmanager
    def running(self) -> Iterator[FakeAnthropic]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = None
                rec = Received(headers, body if isinstance(body, dict) else {"_invalid": raw[:200].decode(errors="replace")},
                               time.monotonic())
                with fake._cond:
                    fake.received.append(rec)
                    fake._cond.notify_all()
                try:
                    self._serve(rec, body)
                finally:
                    rec.finished.set()

            def _serve(self, rec: Received, body: Any) -> None:
                if self.path.split("?", 1)[0] != "/v1/messages":
                    self._error(rec, RequestInvalid(404, "not_found_error", f"Not found: {self.path}"))
                    return
                try:
                    fake.check(rec.headers, body)
                except RequestInvalid as exc:
                    self._error(rec, exc)
                    return
                entry = fake._next()
                if isinstance(entry, Reply):
                    self._error(rec, RequestInvalid(entry.status, entry.error_type, entry.message), entry.headers)
                    return
                offered = {t["name"] for t in body.get("tools") or []}
                try:
                    message, events = fake.render(entry, body["model"], offered)
                except RequestInvalid as exc:
                    self._error(rec, exc)
                    return
                if not body.get("stream"):
                    rec.status = 200
                    self._send_json(200, message)
                    return
                self._stream(rec, entry, events)

            def _error(self, rec: Received, exc: RequestInvalid, headers: Sequence[tuple[str, str]] = ()) -> None:
                rec.status = exc.status
                rec.error = exc.message
                self._send_json(exc.status, {"type": "error", "error": {"type": exc.error_type, "message": exc.message},
                                             "request_id": "req_fake"}, headers)

            def _send_json(self, status: int, obj: dict[str, Any], headers: Sequence[tuple[str, str]] = ()) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", "req_fake")
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _gone(self) -> bool:
                """The client closed its end (readable with nothing to read)."""
                r, _, _ = select.select([self.connection], [], [], 0)
                if not r:
                    return False
                try:
                    return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
                except OSError:
                    return True

            def _stream(self, rec: Received, turn: Turn, events: list[tuple[str, dict[str, Any]]]) -> None:
                rec.status = 200
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("request-id", "req_fake")
                self.end_headers()
                self.wfile.flush()
                try:
                    for n, (name, data) in enumerate(events):
                        if turn.gate is not None and n == turn.gate_after:
                            rec.at_gate.set()
                            while not turn.gate.wait(0.01):
                                if self._gone():
                                    rec.disconnected.set()
                                    self.close_connection = True
                                    return
                        if n > 0 and turn.delay_s:
                            time.sleep(turn.delay_s)
                        if self._gone():
                            rec.disconnected.set()
                            self.close_connection = True
                            return
                        payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                        if turn.cut_after is not None and n == turn.cut_after:
                            self._chunk(payload[: len(payload) // 2])
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        if turn.error_after is not None and n == turn.error_after:
                            err = {"type": "error", "error": {"type": turn.error_type, "message": turn.error_message}}
                            self._chunk(f"event: error\ndata: {json.dumps(err)}\n\n".encode())
                            break
                        self._chunk(payload)
                        rec.events_sent = n + 1
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    rec.disconnected.set()
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        t = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


def _pieces(text: str, split: int | tuple[int, ...]) -> list[str]:
    """``text`` cut into deltas: every ``split`` characters, or at the given positions
    (empty pieces are dropped, so cuts may repeat or fall outside the text)."""
    if isinstance(split, int):
        size = max(1, split)
        cuts = list(range(size, len(text), size))
    else:
        cuts = sorted({c for c in split if 0 < c < len(text)})
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _loose_object(schema: Any, where: str) -> str | None:
    """The path of the first object schema that allows extra properties, if any."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
            return where
        for k, v in schema.items():
            found = _loose_object(v, f"{where}.{k}")
            if found:
                return found
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            found = _loose_object(v, f"{where}.{i}")
            if found:
                return found
    return None
