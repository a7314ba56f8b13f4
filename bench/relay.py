"""The relay's throughput: committed outbox rows to acknowledged stream messages."""

from __future__ import annotations

import time
import uuid

import nats
from nats.js.api import StreamConfig

from bench.common import rate
from bench.raw_nats import PAYLOAD
from outbox import Database, JetStreamPublisher, Relay, RelayConfig, UnitOfWork
from services.embedded import EmbeddedNats


async def relay_rate(server: EmbeddedNats, database_url: str, rows: int) -> float:
    """Rows/s for a relay draining a backlog of ``rows`` (written before the clock starts)."""
    db = Database(database_url)
    nc = await nats.connect(server.url)
    js = nc.jetstream(publish_async_max_pending=4000)
    prefix = f"r{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=f"R_{prefix}", subjects=[f"{prefix}.>"]))
    for start in range(0, rows, 1000):
        async with UnitOfWork(db) as uow:
            for i in range(start, min(rows, start + 1000)):
                uow.publish(f"{prefix}.x", PAYLOAD, message_id=f"{prefix}-{i}")
    relay = Relay(db, JetStreamPublisher(js), RelayConfig(batch_size=1000))
    started = time.perf_counter()
    sent = 0
    while sent < rows:
        sent += await relay.relay_once()
    result = rate(rows, started)
    await nc.close()
    await db.dispose()
    return result
