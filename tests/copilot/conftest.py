"""Copilot tests run the real SDK against the local fake, with every ``ANTHROPIC_*``
variable the SDK would read set to something wrong: a test passes only if the copilot
uses its explicit key and base URL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.fakes.anthropic_api import FakeAnthropic

POISON = {
    "ANTHROPIC_API_KEY": "sk-ant-from-env-wrong",
    "ANTHROPIC_AUTH_TOKEN": "token-from-env-wrong",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",  # discard port: nothing listens
    "ANTHROPIC_CUSTOM_HEADERS": "Authorization: Bearer sk-ant-stolen\nanthropic-version: 1999-01-01\nx-leak: yes",
}


@pytest.fixture(autouse=True)
def poisoned_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in POISON.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic().running() as f:
        yield f


class ManualClock:
    """A clock the test moves; ``sleep_until`` wakes when it reaches the time."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._moved = asyncio.Event()

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t: float) -> None:
        while self.t < t:
            self._moved.clear()
            await self._moved.wait()

    def advance(self, dt: float) -> None:
        self.t += dt
        self._moved.set()
