"""The relay's throughput: committed outbox rows to acknowledged stream messages.

Two backlogs: rows written by units of work as services write them (10,000), and a
backlog of a million unsent rows, inserted by one SQL statement because writing them
one unit of work at a time would take longer than draining them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import nats
from nats.js.api import StreamConfig
from sqlalchemy import LargeBinary, bindparam, text

from bench.common import rate
from bench.raw_nats import PAYLOAD
from contracts.wire import utc_now
from outbox import Database, JetStreamPublisher, Relay, RelayConfig, UnitOfWork
from outbox.columns import UtcDateTime
from services.embedded import EmbeddedNats

PRODUCER = "bench"
"""The rows are one service's, relayed by that service's relay, as services run."""

_SERIES = {
    "sqlite": "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :n) ",
    "postgresql": "",
}
_FROM = {"sqlite": " FROM g", "postgresql": " FROM generate_series(1, :n) AS g(i)"}


async def relay_rate(server: EmbeddedNats, database_url: str, rows: int) -> float:
    """Rows/s for a relay draining ``rows`` written by units of work, 1,000 to a unit."""

    async def write(db: Database, subject: str, prefix: str) -> None:
        for start in range(0, rows, 1000):
            async with UnitOfWork(db) as uow:
                for i in range(start, min(rows, start + 1000)):
                    uow.publish(subject, PAYLOAD, message_id=f"{prefix}-{i}")

    return await _drain_rate(server, database_url, rows, write)


async def backlog_rate(server: EmbeddedNats, database_url: str, rows: int) -> float:
    """Rows/s for a relay draining a backlog of ``rows`` unsent rows inserted in bulk."""

    async def write(db: Database, subject: str, prefix: str) -> None:
        dialect = db.engine.dialect.name
        insert = text(
            _SERIES[dialect] + "INSERT INTO ballast_outbox"
            " (message_id, subject, payload, headers, created_at, attempts, producer)"
            " SELECT :prefix || i, :subject, :payload, '{}', :now, 0, :producer" + _FROM[dialect]
        ).bindparams(bindparam("payload", type_=LargeBinary), bindparam("now", type_=UtcDateTime))
        async with db.engine.begin() as conn:
            await conn.execute(
                insert,
                {
                    "n": rows,
                    "prefix": f"{prefix}-",
                    "subject": subject,
                    "payload": PAYLOAD,
                    "now": utc_now(),
                    "producer": db.producer,
                },
            )

    return await _drain_rate(server, database_url, rows, write)


async def _drain_rate(
    server: EmbeddedNats,
    database_url: str,
    rows: int,
    write: Callable[[Database, str, str], Awaitable[None]],
) -> float:
    """Rows/s of `Relay.relay_once` rounds (1,000 rows each) until ``write``'s rows are sent."""
    db = Database(database_url, producer=PRODUCER)
    nc = await nats.connect(server.url)
    js = nc.jetstream(publish_async_max_pending=4000)
    prefix = f"r{uuid.uuid4().hex[:8]}"
    stream = f"R_{prefix}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    try:
        await write(db, f"{prefix}.x", prefix)
        relay = Relay(db, JetStreamPublisher(js), RelayConfig(batch_size=1000))
        started = time.perf_counter()
        sent = 0
        while sent < rows:
            sent += await relay.relay_once()
        result = rate(rows, started)
        stored = (await js.stream_info(stream)).state.messages
        if stored != rows or await relay.unsent_count():
            raise RuntimeError(f"{rows} rows relayed, {stored} messages in the stream")
        return result
    finally:
        await js.delete_stream(stream)
        await nc.close()
        await db.dispose()
