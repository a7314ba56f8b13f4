"""`ServiceHost`: runs agents and tools in one process on one broker connection.

It owns, for the services it runs: the database (outbox and inbox tables), the
relay, one durable consumer and one worker pool per service, and for agents
the subscription that brings results back. Use it as::

    async with ServiceHost(settings, app.specs):
        ...  # serving until the block ends
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

import nats.errors
import nats.js.errors
import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsMessage
from nats.js import JetStreamContext

from contracts.subjects import Stream
from contracts.wire import utc_now
from outbox import Database, DatabaseError, JetStreamPublisher, OutboxError, Relay, RelayConfig
from outbox.group_commit import GroupCommitConfig
from outbox.retention import prune
from outbox.schema import check_schema, upgrade
from services import approvals, breakers, presence, rate_limits, registry
from services.approvals import Approvals, sweep_expired
from services.breakers import SharedBreakers
from services.broker import NatsCredentials, make_broker
from services.buckets import ensure_buckets
from services.cancelling import cancel_all
from services.delivery import Consumer, ConsumerSettings
from services.errors import BrokerError, ConfigurationError
from services.gauges import GaugeRefresher, WatchedConsumer
from services.keys import Keys, resolve_keys
from services.metrics import Metrics
from services.presence import instance_name
from services.pull_flow import flow_controlled
from services.rate_limits import SharedRateLimiter
from services.redaction import Redactor
from services.registry import AgentPolicy, AgentRegistry
from services.results import ResultWaiter
from services.service_endpoint import ServiceEndpoint
from services.settings import Settings
from services.specs import AgentSpec, ServiceSpec
from services.streams import (
    StreamSettings,
    consumer_config,
    ensure_consumer,
    ensure_streams,
    while_electing,
)
from services.tools import ToolConsumer, ToolGuards

log = structlog.get_logger("ballast.host")

HEALTH_TIMEOUT_S = 2.0
"""How long the health check waits for the database."""

FETCH_TIMEOUT_S = 1.0
"""How long one pull request stays open at the server before it is asked again."""

YOUNG_GENERATION = 5_000
"""Net new objects between two collections of the garbage collector's young generation,
once a host has started (Python's default: 700). A durable call makes about 150 that
live until it ends: at 700 the collector ran every few calls under load, and every
tenth run scanned the objects of all calls in flight again (a loaded tool process,
10,000 calls: 37 us of collection a call, pauses up to 4.6 ms). At 5,000: 12 us a call,
pauses up to 1.7 ms; at 10,000 no less time and pauses up to 4.6 ms again."""


async def _raw_message(msg: NatsMessage) -> NatsMessage:
    # FastStream decoder: hand the handler the message itself; it parses and validates.
    # FastStream caches this on the message, a cycle the consumer breaks when the
    # delivery ends (services.delivery).
    return msg


class ServiceHost:
    """Hosts a set of services; start with ``async with`` or `start` / `stop`."""

    def __init__(self, settings: Settings, specs: Sequence[ServiceSpec], *, name: str) -> None:
        if not settings.nats_url:
            raise ConfigurationError(
                "no NATS URL: set BALLAST_NATS_URL, or run through 'ballast up' which starts one"
            )
        if not specs:
            raise ConfigurationError(f"{name}: nothing to run, no agent or tool was given")
        self.settings = settings
        self.specs = list(specs)
        self.name = name
        # Replicas of a service share its name, so one relays what a dead one left.
        self.db = Database(
            settings.resolved_database_url(),
            producer=name,
            group_commit=GroupCommitConfig(
                max_units=settings.group_commit_max_units, window_s=settings.group_commit_window_s
            ),
        )
        self._stopping = False
        self.credentials = NatsCredentials.of(settings)
        self.metrics = Metrics()
        self.broker: NatsBroker = make_broker(
            settings.nats_url,
            name=name,
            credentials=self.credentials,
            registry=self.metrics.registry,
            on_reconnected=self._reconnected,
            closing=lambda: self._stopping,
            graceful_timeout_s=settings.shutdown_grace_s,
        )
        self.consumers: list[Consumer[Any]] = []
        self._watched: list[WatchedConsumer] = []
        self._waiters: list[ResultWaiter] = []
        self.breakers: SharedBreakers | None = None
        self._relay: Relay | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.http: ServiceEndpoint | None = None
        """The /metrics and /health endpoint, when BALLAST_HTTP_PORT is set."""

    @property
    def relay(self) -> Relay:
        if self._relay is None:
            raise RuntimeError("the host has not started")
        return self._relay

    @property
    def js(self) -> JetStreamContext:
        return self.broker.connection.jetstream()

    async def start(self) -> None:
        """Check (or migrate) the schema, create streams and consumers, then consume and relay."""
        try:
            if self.settings.migrates_itself:
                await upgrade(self.db)
            else:
                await check_schema(self.db)
            await self.db.create_app_tables()
        except OutboxError:
            await self.db.dispose()  # nothing else has started yet
            raise
        await self.broker.connect()
        nc = self.broker.connection
        js = nc.jetstream()
        await ensure_streams(
            js,
            StreamSettings(
                replicas=self.settings.stream_replicas,
                dedup_window_s=self.settings.dedup_window_s,
                max_age_s=self.settings.results_max_age_s,
            ),
        )
        needed = {registry.BUCKET, breakers.BUCKET, presence.BUCKET}
        if any(isinstance(spec, AgentSpec) for spec in self.specs):
            needed |= {approvals.BUCKET, rate_limits.BUCKET}
        await while_electing(lambda: ensure_buckets(js, self.settings.stream_replicas, needed))
        shared = await self._shared(js)
        for spec in self.specs:
            consumer = await self._declare(js, spec, shared)
            self.consumers.append(consumer)
        agents = [spec.name for spec in self.specs if isinstance(spec, AgentSpec)]
        if agents:
            self._tasks.append(
                asyncio.create_task(
                    _supervise(
                        "approval-expiry",
                        lambda: sweep_expired(
                            shared.approvals, agents, self.settings.approval_sweep_s
                        ),
                    )
                )
            )
        self._relay = Relay(
            self.db,
            JetStreamPublisher(js),
            RelayConfig(
                batch_size=self.settings.relay_batch_size,
                sweep_interval_s=self.settings.relay_sweep_interval_s,
            ),
        )
        self.db.on_commit(self._relay.offer)
        self._tasks.append(asyncio.create_task(_supervise("relay", self._relay.run)))
        if self.settings.retention_interval_s > 0:
            self._tasks.append(asyncio.create_task(_supervise("retention", self._prune_forever)))
        gauges = GaugeRefresher(
            self.metrics, js, self._relay, shared.breakers, self._watched,
            instance=instance_name(self.name),
        )  # fmt: skip
        interval = self.settings.metrics_interval_s
        self._tasks.append(asyncio.create_task(_supervise("gauges", lambda: gauges.run(interval))))
        await self.broker.start()
        if self.settings.http_port is not None:
            self.http = ServiceEndpoint(
                self.metrics.registry,
                self.health,
                host=self.settings.http_host,
                port=self.settings.http_port,
            )
            await self.http.start()
            log.info("host.http", url=self.http.url)
        # What starting made (modules, models, compiled statements, connections) lives as
        # long as the process: out of the collector's way, a full collection scans only
        # what came since, instead of pausing every handler for tens of milliseconds.
        gc.freeze()
        gc.set_threshold(YOUNG_GENERATION, *gc.get_threshold()[1:])
        log.info("host.started", host=self.name, services=[s.service for s in self.specs])

    async def _shared(self, js: JetStreamContext) -> _Shared:
        """What every consumer of this host shares: keys, KV-backed registries, settings."""
        settings = self.settings
        keys = resolve_keys(settings)
        breakers = SharedBreakers(js, self.db, settings.breaker_policy)
        registry = AgentRegistry(js)
        approvals = Approvals(js)
        await while_electing(breakers.start)
        await while_electing(registry.start)
        limiter = SharedRateLimiter(js, settings.rate_limits)
        if any(isinstance(spec, AgentSpec) for spec in self.specs):
            await while_electing(approvals.start)  # only agents keep approvals
            await while_electing(limiter.start)  # and call models
        self.breakers = breakers
        return _Shared(
            keys=keys,
            breakers=breakers,
            registry=registry,
            approvals=approvals,
            limiter=limiter,
            guards=ToolGuards(keys, registry, settings.untrusted_rules),
            consumers=ConsumerSettings(
                db=self.db,
                ack_wait_s=settings.ack_wait_s,
                max_payload_bytes=settings.max_payload_bytes,
                redact=Redactor(settings.secret_values()),
                metrics=self.metrics,
            ),
        )

    async def _agent_consumer(
        self, js: JetStreamContext, spec: AgentSpec, shared: _Shared
    ) -> Consumer[Any]:
        # Imported here, not for tools: a replica that serves only tools, as most do, then
        # loads the agent runtime only if the served module imports it (about 0.5 MB).
        from services.agent_context import AgentRuntime
        from services.agents import AgentConsumer

        waiter = ResultWaiter(self.broker.connection, js, spec.name)
        await waiter.start()
        self._waiters.append(waiter)
        policy = AgentPolicy(tools=spec.tools, delegates=spec.delegates)
        await while_electing(functools.partial(shared.registry.declare, spec.name, policy))
        runtime = AgentRuntime(
            db=self.db,
            waiter=waiter,
            breakers=shared.breakers,
            prices=self.settings.prices,
            approvals=shared.approvals,
            limiter=shared.limiter,
            approval_ttl=timedelta(seconds=self.settings.approval_ttl_s),
            redact=shared.consumers.redact,
            metrics=self.metrics,
        )
        return AgentConsumer(
            spec, settings=shared.consumers, runtime=runtime, principals=shared.keys.principals
        )

    async def _declare(
        self, js: JetStreamContext, spec: ServiceSpec, shared: _Shared
    ) -> Consumer[Any]:
        ack_wait = self.settings.ack_wait_s
        consumer: Consumer[Any]
        if isinstance(spec, AgentSpec):
            consumer = await self._agent_consumer(js, spec, shared)
            stream = Stream.TASKS
        else:
            consumer = ToolConsumer(
                spec, settings=shared.consumers, breakers=shared.breakers, guards=shared.guards
            )
            stream = Stream.TOOLS
        config = consumer_config(spec.service, consumer.subject, spec.pool, spec.retry, ack_wait)
        await ensure_consumer(js, stream, config)
        self._watched.append(WatchedConsumer(spec.service, stream.value, consumer.pool))
        subscriber = self.broker.subscriber(
            consumer.subject,
            stream=JStream(stream.value, declare=False),
            durable=spec.service,
            config=config,
            # Pulled with flow control (services.pull_flow): a replica asks only for what
            # its pool can start, and never waits for a batch to fill. Of PullSub only
            # the timeout counts there: each pull request's expiry.
            pull_sub=PullSub(batch_size=1, timeout=FETCH_TIMEOUT_S),
            max_workers=spec.pool.size,
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_message,
            inbox_prefix=f"{self.credentials.inbox_prefix}.".encode(),
        )
        subscriber(consumer)
        flow_controlled(subscriber)
        return consumer

    async def _reconnected(self) -> None:
        # Catch up at once instead of at the next sweep or rescan.
        for waiter in self._waiters:
            waiter.connection_restored()
        if self._relay is not None:
            self._relay.nudge()

    async def _prune_forever(self) -> None:
        """Apply the retention policy every interval (every replica may; deletes are batched)."""
        while True:
            await asyncio.sleep(self.settings.retention_interval_s)
            try:
                pruned = await prune(self.db, self.settings.retention, utc_now())
            except DatabaseError as exc:
                log.warning("retention.failed", error=str(exc))
                continue
            if (
                pruned.outbox_rows
                or pruned.journal_tasks
                or pruned.memory_entries
                or pruned.sessions
            ):
                log.info("retention.pruned", **dataclasses.asdict(pruned))

    async def health(self) -> dict[str, str]:
        """Broker connected, database answering, relay going round: ``"ok"`` or what is wrong."""
        checks = {
            "broker": "ok" if self.broker.connection.is_connected else "not connected to NATS",
            "database": "ok",
            "relay": "ok",
        }
        try:
            await asyncio.wait_for(self.db.ping(), HEALTH_TIMEOUT_S)
        except (OutboxError, TimeoutError) as exc:
            checks["database"] = str(exc) or f"no answer within {HEALTH_TIMEOUT_S}s"
        relay = self._relay
        silent_for = time.monotonic() - (relay.last_round_at or 0.0) if relay else None
        if silent_for is None or silent_for > self._relay_silence_limit():
            checks["relay"] = "no relay round completed recently (broker or database trouble?)"
        return checks

    def _relay_silence_limit(self) -> float:
        # Rounds happen at least every sweep interval; allow for a few slow ones.
        return max(10.0, 5 * self.settings.relay_sweep_interval_s)

    async def stop(self, *, drain_timeout_s: float = 5.0) -> None:
        """Stop consuming, publish what the outbox still holds, close connections."""
        self._stopping = True
        if self.http is not None:
            await self.http.stop()
        # Together: the grace period is for the whole process, not for each consumer.
        stopping = asyncio.gather(*(s.stop() for s in self.broker.subscribers))
        try:
            await asyncio.wait_for(stopping, self.settings.shutdown_grace_s + 5)
        except TimeoutError:
            log.warning("host.consumers_not_stopped", grace_s=self.settings.shutdown_grace_s)
        if self._relay is not None:
            left = await self._relay.drain(drain_timeout_s)
            if left:
                log.warning("host.outbox_not_drained", unsent=left)
        await cancel_all(self._tasks)
        self._tasks.clear()
        for waiter in self._waiters:
            await waiter.stop()
        if self.breakers is not None:
            await self.breakers.stop()
        connection = self.broker.connection
        try:
            await self.broker.stop()
        except nats.errors.Error as exc:  # the broker is unreachable: nothing left to drain
            log.warning("host.broker_not_drained", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(OSError, nats.errors.Error):  # the socket may be half gone
                await connection.close()
        await self.db.dispose()
        log.info("host.stopped", host=self.name)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self._undo_start()
            raise
        return self

    async def _undo_start(self) -> None:
        """Release what a failed start had taken (connections, loops), keeping its error."""
        try:
            await self.stop(drain_timeout_s=0)
        except Exception as exc:  # the start's own error is the one to report
            log.warning("host.start_not_undone", error=str(exc) or type(exc).__name__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


@dataclass(frozen=True, slots=True)
class _Shared:
    keys: Keys
    breakers: SharedBreakers
    registry: AgentRegistry
    approvals: Approvals
    limiter: SharedRateLimiter
    guards: ToolGuards
    consumers: ConsumerSettings


async def _supervise(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Keep a background loop alive: log an unexpected crash and start it again."""
    while True:
        try:
            await run()
            return
        except Exception:
            log.exception("host.loop_crashed", loop=name)
            await asyncio.sleep(START_RETRY_PAUSE_S)


_NOT_ANSWERED = (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError, BrokerError)

START_RETRY_S = 120.0
"""How long `started_host` keeps trying to start a host that JetStream does not answer."""
START_RETRY_PAUSE_S = 1.0


async def started_host(make: Callable[[], ServiceHost]) -> ServiceHost:
    """A started host from ``make()``; a start that JetStream did not answer in time is
    undone and tried again with a fresh host, for `START_RETRY_S`.

    Replicas starting together on a cluster that is electing leaders (or a node that is
    down) see JetStream requests time out at any of their declarations; a process
    supervisor would restart them, and this does it in place.
    """
    deadline = time.monotonic() + START_RETRY_S
    while True:
        host = make()
        try:
            return await host.__aenter__()
        except (
            nats.errors.TimeoutError,
            nats.js.errors.ServiceUnavailableError,
            BrokerError,
        ) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("host.start_retry", host=host.name, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(START_RETRY_PAUSE_S)
