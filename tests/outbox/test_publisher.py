"""Publishing batches to JetStream: every message gets the stream's answer, or an error."""

from __future__ import annotations

import nats

from outbox import JetStreamPublisher, Outgoing
from outbox.publisher import IN_FLIGHT
from services.embedded import EmbeddedNats
from tests.helpers import eventually
from tests.outbox.conftest import Bus, make_bus


def _outgoing(subject: str, count: int, prefix: str = "m") -> list[Outgoing]:
    return [Outgoing(f"{prefix}-{i}", subject, f"{i}".encode(), {}) for i in range(count)]


class TestPublishBatch:
    async def test_a_batch_past_the_unguarded_in_flight_limit_is_stored_once_each(
        self, bus: Bus
    ) -> None:
        messages = _outgoing(bus.subject(), IN_FLIGHT + 300)
        results = await JetStreamPublisher(bus.js).publish_batch(messages)
        assert all(r.ok and not r.duplicate for r in results)
        assert [r.message_id for r in results] == [m.message_id for m in messages]
        assert await bus.stored() == IN_FLIGHT + 300
        again = await JetStreamPublisher(bus.js).publish_batch(messages[:10])
        assert all(r.ok and r.duplicate for r in again)

    async def test_an_unacknowledged_publish_is_an_error_and_frees_its_slot(self, bus: Bus) -> None:
        """A subject with a listener that never answers: no ack, no 'no responders'."""
        silent = f"silent.{bus.prefix}"
        listener = await bus.nc.subscribe(silent)
        try:
            publisher = JetStreamPublisher(bus.js, ack_timeout_s=0.3)
            messages = _outgoing(bus.subject(), 2, "ok") + _outgoing(silent, 1, "lost")
            results = await publisher.publish_batch(messages)
        finally:
            await listener.unsubscribe()
        assert [r.ok for r in results] == [True, True, False]
        assert results[2].error == "no acknowledgement within 0.3s"

        async def slot_freed() -> bool:
            return bus.js.publish_async_pending() == 0

        await eventually(slot_freed, timeout_s=2, what="the lost publish's slot freed")

    async def test_a_subject_no_stream_captures_fails_alone(self, bus: Bus) -> None:
        messages = _outgoing(f"nowhere.{bus.prefix}", 1, "x") + _outgoing(bus.subject(), 1)
        results = await JetStreamPublisher(bus.js).publish_batch(messages)
        assert not results[0].ok
        assert "NoStreamResponse" in (results[0].error or "")
        assert results[1].ok

    async def test_nothing_goes_out_while_reconnecting_and_no_slot_is_lost(
        self, own_nats: EmbeddedNats
    ) -> None:
        """With the server away, nats-py would buffer the publishes and, its buffer full,
        fail each one with its slot of the publishes in flight taken for good. The
        publisher fails them at once instead; once the server is back they all go out."""
        bus = await make_bus(own_nats, reconnect_forever=True)
        nc = await nats.connect(
            own_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, pending_size=2048
        )
        try:
            js = nc.jetstream()
            publisher = JetStreamPublisher(js, ack_timeout_s=0.3)
            messages = _outgoing(bus.subject(), 50)
            await own_nats.kill()

            async def reconnecting() -> bool:
                return not nc.is_connected

            await eventually(reconnecting, timeout_s=5, what="the client reconnecting")
            results = await publisher.publish_batch(messages)
            assert js.publish_async_pending() == 0, "no slot taken"
            assert not any(r.ok for r in results)
            assert "not connected to NATS" in (results[0].error or "")
            await own_nats.start()

            async def connected() -> bool:
                return nc.is_connected

            await eventually(connected, timeout_s=10, what="the client back")
            results = await publisher.publish_batch(messages)
            assert all(r.ok for r in results)
            assert await bus.stored() == 50
        finally:
            await nc.close()
            await bus.nc.close()
