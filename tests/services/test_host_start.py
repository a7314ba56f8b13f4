"""`started_host`: a start JetStream did not answer is undone and tried again with a fresh
host; other errors are not retried."""

from __future__ import annotations

from typing import Any, cast

import nats.errors
import pytest

from services import host as host_module
from services.errors import ConfigurationError
from services.host import ServiceHost, started_host


class Attempt:
    """Stands in for a host whose start fails with ``error`` (or starts, if None)."""

    name = "attempt"

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    async def __aenter__(self) -> Attempt:
        if self.error is not None:
            raise self.error
        return self


async def test_a_start_that_timed_out_is_tried_again_with_a_fresh_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(host_module, "START_RETRY_PAUSE_S", 0.0)
    attempts = iter(
        [Attempt(nats.errors.TimeoutError()), Attempt(nats.errors.TimeoutError()), Attempt(None)]
    )
    made: list[Any] = []

    def make() -> ServiceHost:
        made.append(next(attempts))
        return cast(ServiceHost, made[-1])

    started = await started_host(make)
    assert len(made) == 3
    assert started is made[-1]


async def test_a_configuration_error_is_not_retried() -> None:
    made: list[Attempt] = []

    def make() -> ServiceHost:
        made.append(Attempt(ConfigurationError("no agent or tool")))
        return cast(ServiceHost, made[-1])

    with pytest.raises(ConfigurationError):
        await started_host(make)
    assert len(made) == 1
