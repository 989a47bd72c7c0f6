"""The copilot's settings and its ``anthropic`` client, built from explicit values only.

The SDK reads ``ANTHROPIC_*`` variables by itself: ``ANTHROPIC_API_KEY`` /
``ANTHROPIC_AUTH_TOKEN`` and profiles when no credential is passed, ``ANTHROPIC_BASE_URL``
when no base URL is passed, and ``ANTHROPIC_CUSTOM_HEADERS`` always - whose headers
override the client's own, ``Authorization`` and ``anthropic-version`` included (seen
with SDK 2.17.0).  So :func:`make_client` passes the key and the base URL explicitly
and cancels every header that variable names, re-stating the two the API needs.  The
only key metricx uses is ``METRICX_ANTHROPIC_API_KEY`` (through the settings).

Models: the default is the current Sonnet of the SDK's model list, the cheaper choice
its current Haiku.  Thinking is ``adaptive`` (the only mode besides ``between_tools``
these models accept) and tool choice is never forced (they refuse it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import httpx2
from anthropic import AsyncAnthropic, Omit, omit
from anthropic._constants import ANTHROPIC_API_VERSION  # the version this SDK speaks

from copilot.pricing import PRICES, ModelPrice

DEFAULT_MODEL: Final = "claude-sonnet-5-5"
CHEAP_MODEL: Final = "claude-haiku-5-5"
MODELS: Final = (DEFAULT_MODEL, CHEAP_MODEL)
KEY_VARIABLE: Final = "METRICX_ANTHROPIC_API_KEY"
DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
_SDK_HEADER_VARIABLE: Final = "ANTHROPIC_CUSTOM_HEADERS"


@dataclass(frozen=True, slots=True)
class CopilotConfig:
    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    max_tokens: int = 2048  # per request: an answer is short, the rows are shown apart
    effort: Literal["low", "medium", "high"] = "medium"
    max_tool_calls: int = 4  # per question
    deadline_s: float = 60.0  # per question, all requests and tools included
    max_retries: int = 2  # the SDK's, on 408/409/429/5xx/connection errors, honouring retry-after
    timeout_s: float = 30.0  # HTTP read/write/pool, per request
    connect_timeout_s: float = 5.0
    prices: Mapping[str, ModelPrice] = field(default_factory=lambda: dict(PRICES))

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError(f"{KEY_VARIABLE} is empty")
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError("the Anthropic base URL must be http(s)")
        if not 1 <= self.max_tool_calls <= 10:
            raise ValueError("max_tool_calls must be 1..10")
        if not 256 <= self.max_tokens <= 32_000:
            raise ValueError("max_tokens must be 256..32000")
        if not 0 <= self.max_retries <= 5:
            raise ValueError("max_retries must be 0..5")

    @property
    def price(self) -> ModelPrice | None:
        return self.prices.get(self.model)


def _env_header_names(raw: str | None) -> list[str]:
    """Header names ``ANTHROPIC_CUSTOM_HEADERS`` would add (parsed as the SDK does)."""
    if raw is None:
        return []
    return [line[: line.find(":")].strip() for line in raw.split("\n") if line.find(":") >= 0]


def pinned_headers(api_key: str, environ: Mapping[str, str]) -> dict[str, str | Omit]:
    """Headers that undo ``ANTHROPIC_CUSTOM_HEADERS``: each name it sets is omitted, and
    the credential and the API version keep the values this client means."""
    out: dict[str, str | Omit] = {name: omit for name in _env_header_names(environ.get(_SDK_HEADER_VARIABLE))}
    lower = {k.lower() for k in out}
    if "authorization" in lower or "x-api-key" in lower:
        for k in list(out):
            if k.lower() in ("authorization", "x-api-key"):
                del out[k]
        out["Authorization"] = f"Bearer {api_key}"
    if "anthropic-version" in lower:
        for k in list(out):
            if k.lower() == "anthropic-version":
                del out[k]
        out["anthropic-version"] = ANTHROPIC_API_VERSION
    return out


def make_client(cfg: CopilotConfig, environ: Mapping[str, str] | None = None) -> AsyncAnthropic:
    """An async client bound to ``cfg`` and to nothing from the environment."""
    headers = pinned_headers(cfg.api_key, os.environ if environ is None else environ)
    return AsyncAnthropic(
        api_key=cfg.api_key,
        base_url=cfg.base_url,
        max_retries=cfg.max_retries,
        timeout=httpx2.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
        default_headers=headers,  # type: ignore[arg-type]  # Omit removes a header (SDK contract)
    )
