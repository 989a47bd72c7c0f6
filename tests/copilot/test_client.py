"""The client uses the explicit key and base URL, whatever ``ANTHROPIC_*`` says (the
conftest sets them all to wrong values, including custom headers that would replace the
key)."""

from __future__ import annotations

import asyncio

import pytest
from anthropic import omit

from copilot.client import CHEAP_MODEL, DEFAULT_MODEL, CopilotConfig, make_client, pinned_headers
from tests.fakes.anthropic_api import FakeAnthropic, Text, Turn


def test_requests_carry_only_the_explicit_key_and_the_sdk_version(fake: FakeAnthropic) -> None:
    fake.script(Turn((Text("hi"),)))
    cfg = CopilotConfig(api_key=fake.api_key, base_url=fake.url, max_retries=0)

    async def go() -> None:
        client = make_client(cfg)
        try:
            await client.messages.create(model=cfg.model, max_tokens=10, messages=[{"role": "user", "content": "x"}])
        finally:
            await client.close()

    asyncio.run(go())
    (rec,) = fake.received  # reached the fake: ANTHROPIC_BASE_URL was not used
    assert rec.status == 200
    assert rec.headers["authorization"] == f"Bearer {fake.api_key}"
    assert rec.headers["anthropic-version"] != "1999-01-01"
    assert "x-leak" not in rec.headers and "x-api-key" not in rec.headers


def test_pinned_headers_cancel_what_the_variable_would_add() -> None:
    env = {"ANTHROPIC_CUSTOM_HEADERS": "X-Api-Key: stolen\nx-extra: 1\nAnthropic-Version: 1\nno colon line"}
    h = pinned_headers("sk-mine", env)
    assert h["Authorization"] == "Bearer sk-mine" and h["x-extra"] is omit
    assert h["anthropic-version"] not in (omit, "1")
    assert not {"X-Api-Key", "Anthropic-Version"} & set(h)
    assert pinned_headers("sk-mine", {}) == {}


def test_config_refuses_an_empty_key_and_bad_bounds() -> None:
    with pytest.raises(ValueError, match="METRICX_ANTHROPIC_API_KEY"):
        CopilotConfig(api_key="")
    with pytest.raises(ValueError):
        CopilotConfig(api_key="k", base_url="ftp://x")
    with pytest.raises(ValueError):
        CopilotConfig(api_key="k", max_tool_calls=50)
    assert "sk-ant-secret-77" not in repr(CopilotConfig(api_key="sk-ant-secret-77"))


def test_models_are_from_the_sdk_list() -> None:
    from typing import get_args

    from anthropic.types.model_param import ModelParam

    listed = get_args(get_args(ModelParam)[0])
    assert DEFAULT_MODEL in listed and CHEAP_MODEL in listed
    assert "sonnet" in DEFAULT_MODEL and "haiku" in CHEAP_MODEL
