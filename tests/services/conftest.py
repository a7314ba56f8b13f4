"""Fixtures for service tests: hosts started on real brokers and databases, stopped after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from services.client import BallastClient
from services.embedded import EmbeddedNats
from services.host import ServiceHost
from services.settings import Settings
from services.specs import ServiceSpec
from tests.helpers import TEST_KEY, settings_for

StartHost = Callable[..., "AsyncIterator[ServiceHost]"]


class Hosts:
    """Starts hosts for a test and stops them all at its end."""

    def __init__(self, stack: AsyncExitStack, database_url: str, tmp_path: Path) -> None:
        self._stack = stack
        self._database_url = database_url
        self._tmp_path = tmp_path

    def settings(self, server: EmbeddedNats, **overrides: Any) -> Settings:
        return settings_for(server.url, self._database_url, self._tmp_path, **overrides)

    async def start(
        self, server: EmbeddedNats, specs: Sequence[ServiceSpec], **overrides: Any
    ) -> ServiceHost:
        host = ServiceHost(self.settings(server, **overrides), specs, name="test")
        return await self._stack.enter_async_context(host)

    async def client(self, server: EmbeddedNats) -> BallastClient:
        return await self._stack.enter_async_context(BallastClient(server.url, signer=TEST_KEY))


@pytest.fixture
async def hosts(database_url: str, tmp_path: Path) -> AsyncIterator[Hosts]:
    async with AsyncExitStack() as stack:
        yield Hosts(stack, database_url, tmp_path)
