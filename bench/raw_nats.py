"""Raw nats-py references: what the broker does for us with no Ballast in between."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from bench.common import rate
from services.embedded import EmbeddedNats

PAYLOAD = b'{"call_id": "x:1", "tool": "noop", "args": {"n": 1}}' + b" " * 200
"""About the size of a small tool call."""


async def _stream(js: nats.js.JetStreamContext, prefix: str) -> str:
    name = f"B_{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.>"], duplicate_window=120))
    return name


async def publish_rate(server: EmbeddedNats, count: int) -> float:
    """JetStream publish_async with Nats-Msg-Id, thousands in flight, every ack awaited."""
    nc = await nats.connect(server.url)
    js = nc.jetstream(publish_async_max_pending=4000)
    prefix = f"p{uuid.uuid4().hex[:8]}"
    await _stream(js, prefix)
    started = time.perf_counter()
    futures = [
        await js.publish_async(f"{prefix}.x", PAYLOAD, headers={"Nats-Msg-Id": f"m{i}"})
        for i in range(count)
    ]
    await asyncio.gather(*futures)
    result = rate(count, started)
    await nc.close()
    return result


async def _filled(server: EmbeddedNats, count: int) -> tuple[Client, str, str]:
    nc = await nats.connect(server.url)
    js = nc.jetstream(publish_async_max_pending=4000)
    prefix = f"c{uuid.uuid4().hex[:8]}"
    stream = await _stream(js, prefix)
    futures = [await js.publish_async(f"{prefix}.in", PAYLOAD) for _ in range(count)]
    await asyncio.gather(*futures)
    return nc, stream, prefix


async def consume_rate(server: EmbeddedNats, count: int, *, reply: bool = False) -> float:
    """Pull consume (fetch 100) and ack each message; with ``reply``, also publish a result
    per message and wait for its ack before acking the input (the shape of a tool call)."""
    nc, stream, prefix = await _filled(server, count)
    js = nc.jetstream(publish_async_max_pending=4000)
    sub = await js.pull_subscribe(
        f"{prefix}.in",
        durable="bench",
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1000),
    )
    done = 0
    started = time.perf_counter()
    while done < count:
        msgs = await sub.fetch(100, timeout=5)
        if reply:
            acks = [await js.publish_async(f"{prefix}.out", m.data) for m in msgs]
            await asyncio.gather(*acks)
        for m in msgs:
            await m.ack()
        done += len(msgs)
    result = rate(count, started)
    await nc.close()
    return result


async def round_trip_ms(
    server: EmbeddedNats, count: int, commit: Callable[[int], Awaitable[None]] | None = None
) -> list[float]:
    """One at a time: publish a request to a stream, a pull consumer publishes a reply to a
    second stream and acks, the requester receives the reply: the raw shape of one step.

    With ``commit``, each side first commits a row (``commit(n)``, n numbering the
    requests): the requester before its request, the consumer before its reply, as the
    outbox makes an agent and a tool do.
    """
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    prefix = f"rt{uuid.uuid4().hex[:8]}"
    stream = await _stream(js, prefix)
    sub = await js.pull_subscribe(f"{prefix}.req", durable="rt", stream=stream)
    replies: asyncio.Queue[float] = asyncio.Queue()

    async def on_reply(msg: object) -> None:
        replies.put_nowait(time.perf_counter())

    await nc.subscribe(f"{prefix}.rep", cb=on_reply)

    stop = asyncio.Event()

    async def serve() -> None:
        # Stopped by a flag, not by cancelling: nats-py turns a cancelled fetch into a timeout.
        while not stop.is_set():
            try:
                msgs = await sub.fetch(1, timeout=0.2)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for m in msgs:
                if commit is not None:
                    await commit(m.metadata.sequence.stream)
                await js.publish(f"{prefix}.rep", m.data)
                await m.ack()

    server_task = asyncio.create_task(serve())
    samples = []
    for i in range(count):
        sent = time.perf_counter()
        if commit is not None:
            await commit(i)
        await js.publish(f"{prefix}.req", PAYLOAD, headers={"Nats-Msg-Id": f"r{i}"})
        samples.append((await asyncio.wait_for(replies.get(), 10) - sent) * 1000)
    stop.set()
    await server_task
    await nc.close()
    return samples
