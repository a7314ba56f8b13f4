"""``ballast status``: streams, consumers and the outbox at a glance."""

from __future__ import annotations

import nats.js.errors
from rich.table import Table

from contracts.subjects import Stream
from contracts.wire import utc_now
from outbox import Database, JetStreamPublisher, Relay
from services.cli.common import client_for, load_settings, run
from services.cli.console import console
from services.dead_letters import dead_letter_counts


def status() -> None:
    """Show streams, consumers (pending, in flight, redelivered), dead letters, outbox lag."""

    async def main() -> None:
        settings = load_settings()
        async with client_for(settings) as client:
            streams = Table("stream", "messages", "bytes", "consumers")
            consumers = Table(
                "consumer", "stream", "pending", "in flight", "redelivered", "max in flight"
            )
            for stream in Stream:
                try:
                    info = await client.js.stream_info(stream.value)
                except nats.js.errors.NotFoundError:
                    streams.add_row(stream.value, "-", "-", "missing")
                    continue
                streams.add_row(
                    stream.value,
                    str(info.state.messages),
                    str(info.state.bytes),
                    str(info.state.consumer_count),
                )
                for c in await client.js.consumers_info(stream.value):
                    consumers.add_row(
                        c.name,
                        stream.value,
                        str(c.num_pending),
                        str(c.num_ack_pending),
                        str(c.num_redelivered),
                        str(c.config.max_ack_pending),
                    )
            console.print(streams)
            console.print(consumers)
            counts = await dead_letter_counts(client.js)
            console.print(
                "dead letters: "
                + (", ".join(f"{k}={v}" for k, v in counts.items()) if counts else "none")
            )
            db = Database(settings.resolved_database_url())
            try:
                relay = Relay(db, JetStreamPublisher(client.js))
                unsent = await relay.unsent_count()
                oldest = await relay.oldest_unsent_at()
                lag = f", oldest {(utc_now() - oldest).total_seconds():.1f}s old" if oldest else ""
                console.print(f"outbox ({db.safe_url}): {unsent} unsent{lag}")
            finally:
                await db.dispose()

    run(main())
