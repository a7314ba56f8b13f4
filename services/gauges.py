"""Refreshes the gauges that describe state kept elsewhere: the broker, the outbox, breakers.

Each refresh also reports this host's pools and backlog to the presence bucket,
where the dashboard reads them.

Counters are updated where things happen; these values are read every few
seconds instead, so that a scrape never waits on the broker or the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext

from bulkheads import WorkerPool
from contracts.wire import utc_now
from outbox import DatabaseError, Relay
from services.breakers import SharedBreakers
from services.dead_letters import dead_letter_counts
from services.metrics import BREAKER_LEVEL, Metrics
from services.presence import Presence, ServiceReport

log = structlog.get_logger("ballast.gauges")


@dataclass(frozen=True, slots=True)
class WatchedConsumer:
    """A durable consumer of this host and the pool that serves it."""

    service: str
    stream: str
    pool: WorkerPool


class GaugeRefresher:
    """Reads backlog, dead letters, breakers and outbox lag into ``metrics``."""

    def __init__(
        self,
        metrics: Metrics,
        js: JetStreamContext,
        relay: Relay,
        breakers: SharedBreakers,
        consumers: Sequence[WatchedConsumer],
        *,
        instance: str,
    ) -> None:
        self._metrics = metrics
        self._js = js
        self._relay = relay
        self._breakers = breakers
        self._consumers = list(consumers)
        self._relayed = 0
        self._presence = Presence(js)
        self._instance = instance

    async def run(self, interval_s: float) -> None:
        """Refresh every ``interval_s`` until cancelled; a failed read keeps the last values."""
        while True:
            try:
                await self.refresh()
            except (nats.errors.Error, DatabaseError, OSError, TimeoutError) as exc:
                log.warning("gauges.refresh_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(interval_s)

    async def refresh(self) -> None:
        m = self._metrics
        for c in self._consumers:
            m.pool_in_use.labels(c.service).set(c.pool.in_use)
            m.pool_size.labels(c.service).set(c.pool.size)
            try:
                info = await self._js.consumer_info(c.stream, c.service)
            except nats.js.errors.NotFoundError:
                continue
            m.consumer_pending.labels(c.service).set(info.num_pending or 0)
            m.consumer_in_flight.labels(c.service).set(info.num_ack_pending or 0)
            await self._presence.report(
                ServiceReport(
                    service=c.service,
                    instance=self._instance,
                    pool_size=c.pool.size,
                    pool_in_use=c.pool.in_use,
                    pending=info.num_pending or 0,
                    in_flight=info.num_ack_pending or 0,
                    reported_at=utc_now(),
                )
            )
        counts = await dead_letter_counts(self._js)
        for c in self._consumers:
            m.dlq_depth.labels(c.service).set(counts.get(c.service, 0))
        for name, state in self._breakers.states().items():
            m.breaker_state.labels(name).set(BREAKER_LEVEL[state.value])
        m.outbox_unsent.set(await self._relay.unsent_count())
        oldest = await self._relay.oldest_unsent_at()
        m.outbox_lag.set((utc_now() - oldest).total_seconds() if oldest else 0.0)
        published = self._relay.published_total
        m.relay_published.inc(published - self._relayed)
        self._relayed = published
