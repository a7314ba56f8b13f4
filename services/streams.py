"""Streams and consumers, declared idempotently at start-up.

Every service calls `ensure_streams` when it starts: the first one creates the
streams, the others find them and bring their settings up to date. Each agent
and tool has one durable pull consumer, shared by all of its replicas.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from bulkheads import PoolConfig, RetryPolicy
from contracts.subjects import STREAM_SUBJECTS, Stream
from services.errors import BrokerError

DLQ_MAX_AGE_S = 30 * 24 * 3600.0
"""Dead letters wait a month for an operator."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSettings:
    """What every Ballast stream shares."""

    replicas: int = 1
    dedup_window_s: float = 120.0
    max_age_s: float = 7 * 24 * 3600.0


def stream_config(stream: Stream, settings: StreamSettings) -> StreamConfig:
    """The configuration of one of Ballast's streams."""
    return StreamConfig(
        name=stream.value,
        subjects=[STREAM_SUBJECTS[stream]],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.dedup_window_s,
        max_age=DLQ_MAX_AGE_S if stream is Stream.DLQ else settings.max_age_s,
        # Results are read back by subject when a run resumes after a crash, and clients
        # find where to start watching events by time: both use direct gets.
        allow_direct=stream in (Stream.RESULTS, Stream.EVENTS),
    )


JETSTREAM_READY_S = 30.0
"""How long a starting service waits for JetStream (a cluster electing its leaders)."""

NO_PEERS_FOR_PLACEMENT = 10005
"""JetStream's error code when too few servers are up for a stream's replicas."""

STREAM_NAME_IN_USE = 10058
"""JetStream's error code when a stream of that name exists already."""


async def ensure_streams(
    js: JetStreamContext, settings: StreamSettings, ready_s: float = JETSTREAM_READY_S
) -> None:
    """Create Ballast's streams, or update them to ``settings``; safe to call from every replica."""
    for stream in Stream:
        config = stream_config(stream, settings)
        await while_electing(functools.partial(_ensure, js, config), ready_s)


async def while_electing(
    call: Callable[[], Awaitable[object]], ready_s: float = JETSTREAM_READY_S
) -> None:
    """``call()``, retried for ``ready_s`` while JetStream is not answering yet.

    A cluster that has just started (or lost a node) answers with timeouts or
    "unavailable" until it has elected its leaders: the meta leader for streams,
    then one leader per stream, bucket and consumer; a write to a bucket created a
    moment ago finds no responder until the bucket's leader is elected. The meta
    leader may also count a server that has just joined as offline for a moment, and
    refuse to place replicas on it. Replicas starting together meet this on every declaration, so
    each one at start-up goes through here; ``call`` must be safe to repeat.
    """
    deadline = asyncio.get_running_loop().time() + ready_s
    while True:
        try:
            await call()
            return
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != NO_PEERS_FOR_PLACEMENT:
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(
                    f"JetStream found too few servers for the replicas asked for within "
                    f"{ready_s:g} s ({exc.description}); start the missing servers, or "
                    "lower BALLAST_STREAM_REPLICAS to the number of servers"
                ) from exc
        except (
            nats.errors.TimeoutError,
            nats.js.errors.ServiceUnavailableError,
            nats.js.errors.NoStreamResponseError,
        ) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(
                    f"JetStream did not answer within {ready_s:g} s; is it "
                    "enabled on the server (-js), and does the cluster have a quorum?"
                ) from exc
        await asyncio.sleep(0.5)


async def _ensure(js: JetStreamContext, config: StreamConfig) -> None:
    name = str(config.name)
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
            return
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            # another replica created it in the meantime: fall through to update
    try:
        await js.update_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code == NO_PEERS_FOR_PLACEMENT:
            raise
        raise BrokerError(
            f"stream {name} exists with settings that cannot be changed in place "
            f"({exc.description}); migrate it or delete it"
        ) from exc


def consumer_config(
    durable: str, subject: str, pool: PoolConfig, retry: RetryPolicy, ack_wait_s: float
) -> ConsumerConfig:
    """A durable pull consumer whose limits match its bulkhead."""
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subject=subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=retry.server_max_deliver,
        # The trap: the default (1000) lets one replica hoard messages it cannot run.
        max_ack_pending=pool.max_ack_pending,
    )


async def ensure_consumer(js: JetStreamContext, stream: Stream, config: ConsumerConfig) -> None:
    """Create the durable consumer, or update its limits if it exists.

    Returns once the consumer answers for itself (in a cluster: once it has a leader),
    since the subscriber that pulls from it asks for its info first.
    """
    try:
        await while_electing(lambda: js.add_consumer(stream.value, config))
    except nats.js.errors.BadRequestError as exc:
        raise BrokerError(
            f"consumer {config.durable_name} on {stream.value} cannot be updated "
            f"({exc.description}); delete it with 'nats consumer rm' and restart"
        ) from exc
    await while_electing(lambda: js.consumer_info(stream.value, str(config.durable_name)))
