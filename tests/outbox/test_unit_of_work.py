"""The unit of work: business rows, outbox messages and inbox entries commit together."""

from __future__ import annotations

import pytest

from outbox import AlreadyProcessedError, Database, JetStreamPublisher, Relay, UnitOfWork
from tests.outbox.conftest import Bus, Widget, widget_count


class TestAtomicity:
    async def test_rolled_back_transaction_publishes_nothing(self, db: Database, bus: Bus) -> None:
        """A unit of work that raises leaves no row and sends no message; a committed one sends."""
        with pytest.raises(RuntimeError, match="business rule"):
            async with UnitOfWork(db) as uow:
                uow.session.add(Widget(name="doomed"))
                uow.publish(bus.subject(), b"never", message_id="doomed-1")
                raise RuntimeError("business rule violated")

        async with UnitOfWork(db) as uow:
            uow.session.add(Widget(name="kept"))
            uow.publish(bus.subject(), b"sent", message_id="kept-1")

        relay = Relay(db, JetStreamPublisher(bus.js))
        assert await relay.relay_once() == 1
        assert await bus.stored() == 1
        stored = await bus.js.get_msg(bus.stream, 1)
        assert stored.data == b"sent"
        assert (stored.headers or {})["Nats-Msg-Id"] == "kept-1"
        assert await widget_count(db) == 1

    async def test_failed_commit_keeps_neither_row_nor_message(
        self, db: Database, bus: Bus
    ) -> None:
        """If the commit itself fails, the messages staged with it are gone too."""
        async with UnitOfWork(db) as uow:
            uow.session.add(Widget(id=1, name="first"))
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            async with UnitOfWork(db) as uow:
                uow.session.add(Widget(id=1, name="clash"))
                uow.publish(bus.subject(), b"never")
        assert await Relay(db, JetStreamPublisher(bus.js)).unsent_count() == 0


class TestInbox:
    async def test_second_commit_for_the_same_key_is_refused(self, db: Database) -> None:
        """Marking a key processed twice fails the second transaction and keeps its writes out."""
        async with UnitOfWork(db) as uow:
            uow.session.add(Widget(name="effect"))
            uow.mark_processed("consumer-a", "key-1", b"result")

        with pytest.raises(AlreadyProcessedError):
            async with UnitOfWork(db) as uow:
                uow.session.add(Widget(name="second effect"))
                uow.mark_processed("consumer-a", "key-1", b"result")

        async with UnitOfWork(db) as uow:
            entry = await uow.processed("consumer-a", "key-1")
            other = await uow.processed("consumer-b", "key-1")
        assert entry is not None
        assert entry.result == b"result"
        assert other is None
        assert await widget_count(db) == 1
