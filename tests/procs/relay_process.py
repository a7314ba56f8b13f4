"""A relay as its own process, for tests that kill it with SIGKILL.

Usage: python -m tests.procs.relay_process DATABASE_URL NATS_URL BATCH_SIZE
"""

from __future__ import annotations

import asyncio
import sys

import nats

from outbox import Database, JetStreamPublisher, Relay, RelayConfig


async def main(database_url: str, nats_url: str, batch_size: int) -> None:
    db = Database(database_url)
    nc = await nats.connect(nats_url, max_reconnect_attempts=-1)
    relay = Relay(db, JetStreamPublisher(nc.jetstream()), RelayConfig(batch_size=batch_size))
    await relay.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
