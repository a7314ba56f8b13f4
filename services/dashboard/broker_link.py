"""The dashboard's connection to NATS, made when first needed and retried per page.

The dashboard is most wanted when something is wrong, the broker included, so
it starts without one and shows the database's view until NATS answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats.errors
from nats.js import JetStreamContext

from services.client import BallastClient
from services.errors import BallastError, BrokerError

CONNECT_TIMEOUT_S = 3.0


class BrokerLink:
    """Hands out a JetStream context, connecting on first use; ``make_client`` builds one."""

    def __init__(self, make_client: Callable[[], BallastClient]) -> None:
        self._make_client = make_client
        self._client: BallastClient | None = None
        self._lock = asyncio.Lock()

    async def js(self) -> JetStreamContext:
        """The connected context; raises `BrokerError` saying why there is none."""
        async with self._lock:
            if self._client is None:
                try:
                    client = self._make_client()
                    await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT_S)
                except TimeoutError:
                    raise BrokerError(
                        f"NATS did not answer within {CONNECT_TIMEOUT_S:.0f} s"
                    ) from None
                except BallastError as exc:
                    raise BrokerError(str(exc)) from exc
                self._client = client
        if not self._client.nc.is_connected:
            raise BrokerError(f"the connection to NATS at {self._client.url} is down; retrying")
        return self._client.js

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._client.close()
            self._client = None
