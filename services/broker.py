"""A FastStream NATS broker with the connection settings services need.

nats-py's defaults suit scripts, not services: it gives up reconnecting after
about two minutes and notices a dead connection only after minutes. A service
reconnects forever, pings often, and logs every asynchronous error, because a
permission violation shows up only there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from faststream.nats import NatsBroker
from faststream.nats.security import NatsNKey
from prometheus_client import CollectorRegistry

from services.broker_metrics import BrokerMetrics
from services.settings import Settings
from services.trace_context import consume_tracing

log = structlog.get_logger("ballast.broker")


@dataclass(frozen=True, slots=True)
class NatsCredentials:
    """Who a process is to NATS: its nkey user and the inbox its replies arrive on."""

    nkey_seed: str | None = None
    inbox_prefix: str = "_INBOX"

    @classmethod
    def of(cls, settings: Settings) -> NatsCredentials:
        seed = settings.nats_nkey_seed.get_secret_value() if settings.nats_nkey_seed else None
        return cls(seed, settings.nats_inbox_prefix)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        options: dict[str, Any] = {"inbox_prefix": self.inbox_prefix}
        if self.nkey_seed:
            options["nkeys_seed_str"] = self.nkey_seed
        return options


PING_INTERVAL_S = 5
RECONNECT_WAIT_S = 1


async def _on_error(exc: Exception) -> None:
    log.warning("nats.error", error=str(exc) or type(exc).__name__)


def make_broker(
    servers: str,
    *,
    name: str,
    credentials: NatsCredentials,
    registry: CollectorRegistry,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
    closing: Callable[[], bool] = lambda: False,
    graceful_timeout_s: float = 20.0,
) -> NatsBroker:
    """A broker for ``servers`` (comma separated URLs) that never gives up reconnecting.

    ``on_reconnected`` runs after each reconnection, to catch up on what the
    connection may have missed while it was down. ``closing`` tells whether a
    disconnection is the expected end of the connection rather than a fault.
    Stopping waits up to ``graceful_timeout_s`` for the messages being handled.
    """

    async def disconnected() -> None:
        if not closing():
            log.warning("nats.disconnected")

    async def reconnected() -> None:
        log.info("nats.reconnected")
        if on_reconnected is not None:
            await on_reconnected()

    # FastStream reports its own housekeeping at INFO; Ballast logs what matters itself.
    logging.getLogger("faststream").setLevel(logging.WARNING)
    return NatsBroker(
        [s.strip() for s in servers.split(",") if s.strip()],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT_S,
        ping_interval=PING_INTERVAL_S,
        max_outstanding_pings=3,
        error_cb=_on_error,
        security=NatsNKey.from_seed(credentials.nkey_seed) if credentials.nkey_seed else None,
        inbox_prefix=credentials.inbox_prefix,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        # Handlers get the raw message (see services.delivery); no dependency injection.
        apply_types=False,
        graceful_timeout=graceful_timeout_s,
        middlewares=(
            consume_tracing(),  # a span per message when tracing is on, else its trace context
            BrokerMetrics(registry=registry, app_name=name),
        ),
        # FastStream's per-message log lines cost ~30% of throughput; keep them at DEBUG
        # on a logger that filters them out unless asked for.
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
    )
