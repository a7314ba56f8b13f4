"""A backlog of 1,000,000 rows: the relay, `ballast tasks ls` and retention on a large table.

``python -m bench.backlog`` fills a fresh PostgreSQL database with a million sent
outbox rows (plus a thousand unsent ones) and the journals of 250,000 finished
runs (a million steps), then times what services and operators do on it.
``make bench`` measures the relay on such a table (`relay_among_sent`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sized
from datetime import timedelta

import nats
from nats.js.api import StreamConfig
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.common import fresh_broker, rate
from bench.databases import postgres_database
from contracts.wire import utc_now
from outbox import Database, JetStreamPublisher, Relay, RelayConfig
from outbox.retention import RetentionPolicy, prune
from services.embedded import EmbeddedNats
from services.trace import tasks

ROWS = 1_000_000
UNSENT = 1_000
RUNS = 250_000


async def fill(db: Database) -> None:
    """A million sent outbox rows, a thousand unsent, 250,000 finished runs."""
    old = utc_now() - timedelta(days=40)
    async with db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO ballast_outbox (message_id, subject, payload, headers, created_at,"
                " sent_at, attempts) SELECT 'm' || g, 'bk.x', 'x', '{}', :old, :old, 0"
                " FROM generate_series(1, :n) g"
            ),
            {"old": old, "n": ROWS},
        )
        await _add_unsent(conn, "u")
        await conn.execute(
            text(
                "INSERT INTO ballast_journal (task_id, seq, kind, name, status, started_at,"
                " finished_at) SELECT 't' || g, s, CASE WHEN s = 0 THEN 'run' ELSE 'tool' END,"
                " 'a', 'completed', CAST(:old AS timestamptz) + g * interval '1 ms',"
                " CAST(:old AS timestamptz) + g * interval '1 ms'"
                " FROM generate_series(1, :runs) g, generate_series(0, 3) s"
            ),
            {"old": old, "runs": RUNS},
        )
        await conn.execute(text("ANALYZE"))


async def _add_unsent(conn: AsyncConnection, prefix: str) -> None:
    await conn.execute(
        text(
            "INSERT INTO ballast_outbox (message_id, subject, payload, headers, created_at,"
            " attempts) SELECT :prefix || g, 'bk.x', 'x', '{}', now(), 0"
            " FROM generate_series(1, :n) g"
        ),
        {"prefix": prefix, "n": UNSENT},
    )


async def relay_among_sent(server: EmbeddedNats, db: Database) -> float:
    """Rows/s of the relay publishing 1,000 new unsent rows in a table as `fill` left it."""
    async with db.engine.begin() as conn:
        await _add_unsent(conn, f"r{uuid.uuid4().hex[:8]}-")
    nc = await nats.connect(server.url)
    js = nc.jetstream(publish_async_max_pending=4000)
    await js.add_stream(StreamConfig(name="BK", subjects=["bk.>"]))
    relay = Relay(db, JetStreamPublisher(js), RelayConfig(batch_size=UNSENT))
    started = time.perf_counter()
    sent = await relay.relay_once()
    result = rate(sent, started)
    await nc.close()
    return result


async def _timed(label: str, work: Awaitable[object]) -> None:
    started = time.perf_counter()
    result = await work
    print(f"{label}: {(time.perf_counter() - started) * 1000:,.0f} ms ({result})")


async def main() -> None:
    async with postgres_database() as url, fresh_broker() as server:
        db = Database(url)
        started = time.perf_counter()
        await fill(db)
        print(f"filled {ROWS:,} outbox rows and {RUNS * 4:,} journal rows in "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        nc = await nats.connect(server.url)
        js = nc.jetstream(publish_async_max_pending=4000)
        await js.add_stream(StreamConfig(name="BK", subjects=["bk.>"]))
        relay = Relay(db, JetStreamPublisher(js), RelayConfig(batch_size=1000))
        await _timed("relay: count unsent among 1M sent", relay.unsent_count())
        await _timed("relay: publish the 1,000 unsent rows", relay.relay_once())
        await _timed("tasks ls (50 newest of 250,000 runs)", _count(tasks(db, limit=50)))
        policy = RetentionPolicy(sent_for=timedelta(days=1), journal_for=timedelta(days=30))
        await _timed(
            "retention: prune 1M sent rows and 250,000 journals", prune(db, policy, utc_now())
        )
        await nc.close()
        await db.dispose()


async def _count(work: Awaitable[Sized]) -> int:
    return len(await work)


if __name__ == "__main__":
    asyncio.run(main())
