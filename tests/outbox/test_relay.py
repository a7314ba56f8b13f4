"""The relay: every committed row reaches the stream exactly once, whatever happens to it."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from outbox import Database, JetStreamPublisher, Outgoing, Published, Relay, RelayConfig, UnitOfWork
from outbox.schema import upgrade
from services.embedded import EmbeddedNats
from tests.conftest import POSTGRES_URL, fresh_postgres_database
from tests.helpers import eventually
from tests.outbox.conftest import Bus, make_bus

ROOT = Path(__file__).resolve().parents[2]


async def write_rows(db: Database, bus: Bus, count: int, *, per_transaction: int = 100) -> None:
    for start in range(0, count, per_transaction):
        async with UnitOfWork(db) as uow:
            for i in range(start, min(count, start + per_transaction)):
                uow.publish(bus.subject(), f"row {i}".encode(), message_id=f"row-{i}")


async def stored_ids(bus: Bus) -> list[str]:
    ids = []
    info = await bus.js.stream_info(bus.stream)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(bus.stream, seq)
        ids.append((msg.headers or {})["Nats-Msg-Id"])
    return ids


class StallAfterPublish(JetStreamPublisher):
    """Publishes for real, then never returns: the relay dies before marking rows sent."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus.js)
        self.published = asyncio.Event()

    async def publish_batch(self, messages: list[Outgoing]) -> list[Published]:
        results = await super().publish_batch(messages)
        self.published.set()
        await asyncio.Event().wait()
        return results


class TestCrashBetweenPublishAndMarkSent:
    async def test_rows_are_published_again_and_the_stream_keeps_one_copy(
        self, db: Database, bus: Bus
    ) -> None:
        """A relay dying after the broker acked but before marking leaves rows unsent; the next
        relay publishes them again with the same ids and the stream drops the copies."""
        await write_rows(db, bus, 250)
        stalling = StallAfterPublish(bus)
        first = Relay(db, stalling, RelayConfig(batch_size=250))
        round_ = asyncio.create_task(first.relay_once())
        await asyncio.wait_for(stalling.published.wait(), 10)
        round_.cancel()
        with pytest.raises(asyncio.CancelledError):
            await round_

        assert await bus.stored() == 250
        second = Relay(db, JetStreamPublisher(bus.js))
        assert await second.unsent_count() == 250, "the dead relay marked nothing"
        assert await second.relay_once() == 250
        assert await second.unsent_count() == 0
        ids = await stored_ids(bus)
        assert sorted(ids) == sorted(f"row-{i}" for i in range(250))

    @pytest.mark.chaos
    async def test_relay_killed_repeatedly_delivers_every_row_once(
        self, db: Database, bus: Bus, database_url: str, nats_server: EmbeddedNats
    ) -> None:
        """kill -9 a relay process at random moments; after a restart, each row is in the stream
        exactly once and none is left unsent."""
        total = 3000
        await write_rows(db, bus, total)
        rng = random.Random(7)
        args = [sys.executable, "-m", "tests.procs.relay_process", database_url, nats_server.url]
        for _ in range(4):
            proc = await asyncio.create_subprocess_exec(*args, "50", cwd=ROOT)
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            proc.kill()
            await proc.wait()
        assert await bus.stored() < total, "the kills should interrupt the relaying"
        proc = await asyncio.create_subprocess_exec(*args, "50", cwd=ROOT)
        try:
            relay = Relay(db, JetStreamPublisher(bus.js))
            await eventually(lambda: _none_unsent(relay), timeout_s=60, what="the outbox to drain")
        finally:
            proc.kill()
            await proc.wait()
        ids = await stored_ids(bus)
        assert len(ids) == total
        assert len(set(ids)) == total


async def _none_unsent(relay: Relay) -> bool:
    return await relay.unsent_count() == 0


class TestBrokerOutage:
    async def test_rows_wait_while_the_broker_is_down_and_go_out_when_it_is_back(
        self, db: Database, own_nats: EmbeddedNats
    ) -> None:
        """Committing works without the broker; the relay retries and delivers everything."""
        bus = await make_bus(own_nats, reconnect_forever=True)
        relay = Relay(db, JetStreamPublisher(bus.js, ack_timeout_s=0.5), RelayConfig(batch_size=50))
        db.on_commit(relay.offer)
        running = asyncio.create_task(relay.run())
        try:
            await own_nats.stop()
            await write_rows(db, bus, 120, per_transaction=10)
            await asyncio.sleep(1.0)  # the relay tries and fails during the outage
            assert await relay.unsent_count() == 120
            await own_nats.start()
            await eventually(
                lambda: _none_unsent(relay), timeout_s=30, what="delivery after restart"
            )
            assert sorted(await stored_ids(bus)) == sorted(f"row-{i}" for i in range(120))
        finally:
            running.cancel()
            await bus.nc.close()


class TestNudge:
    async def test_a_commit_wakes_the_relay_without_waiting_for_the_sweep(
        self, db: Database, bus: Bus
    ) -> None:
        """With a sweep interval of a minute, a nudged relay still publishes at once."""
        relay = Relay(db, JetStreamPublisher(bus.js), RelayConfig(sweep_interval_s=60))
        db.on_commit(relay.offer)
        running = asyncio.create_task(relay.run())
        try:
            await asyncio.sleep(0.1)  # let the first (empty) round pass into its long wait
            await write_rows(db, bus, 5)
            await eventually(_stored(bus, 5), timeout_s=2, what="a nudged publish")
        finally:
            running.cancel()

    async def test_handed_over_rows_do_not_wait_for_a_sweep_in_progress(
        self, db: Database, bus: Bus
    ) -> None:
        """A sweep reads the table for a few milliseconds, longer on a busy database; rows a
        commit hands over meanwhile go out at once instead of queueing behind it."""
        relay = HangingSweep(db, JetStreamPublisher(bus.js))
        db.on_commit(relay.offer)
        running = asyncio.create_task(relay.run())
        try:
            await relay.sweeping.wait()
            await write_rows(db, bus, 5)
            await eventually(_stored(bus, 5), timeout_s=2, what="a publish during a sweep")
        finally:
            running.cancel()


class HangingSweep(Relay):
    """A relay whose sweep, once begun, never ends."""

    def __init__(self, db: Database, publisher: JetStreamPublisher) -> None:
        super().__init__(db, publisher)
        self.sweeping = asyncio.Event()

    async def _round(self, min_age_s: float) -> int:
        self.sweeping.set()
        await asyncio.Event().wait()
        return 0


class TestSharedDatabase:
    async def test_each_service_relays_its_own_rows_and_rows_of_no_producer(
        self, database_url: str, bus: Bus
    ) -> None:
        """Services sharing one database: a relay never publishes another service's rows
        (its NATS user could not), but does publish rows written without a producer."""
        triage = Database(database_url, producer="agent-triage")
        lookup = Database(database_url, producer="tool-lookup")
        anyone = Database(database_url)
        try:
            await write_rows(triage, bus, 3)
            async with UnitOfWork(anyone) as uow:
                uow.publish(bus.subject(), b"shared", message_id="shared-1")
            lookup_relay = Relay(lookup, JetStreamPublisher(bus.js))
            assert await lookup_relay.unsent_count() == 1
            assert await lookup_relay.relay_once() == 1
            assert await stored_ids(bus) == ["shared-1"]
            triage_relay = Relay(triage, JetStreamPublisher(bus.js))
            assert await triage_relay.relay_once() == 3
            assert sorted(await stored_ids(bus)) == ["row-0", "row-1", "row-2", "shared-1"]
        finally:
            for db in (triage, lookup, anyone):
                await db.dispose()

    async def test_own_rows_and_rows_of_no_producer_go_oldest_first(
        self, database_url: str, bus: Bus
    ) -> None:
        """A relay reads its producer's rows and rows of no producer as two ranges of the
        unsent index; merged, the stream still gets them in commit order, batch after batch."""
        mine = Database(database_url, producer="tool-lookup")
        writers = [mine, Database(database_url), Database(database_url, producer="agent-triage")]
        try:
            for i in range(30):
                async with UnitOfWork(writers[i % 3]) as uow:
                    uow.publish(bus.subject(), b"x", message_id=f"row-{i}")
            relay = Relay(mine, JetStreamPublisher(bus.js), RelayConfig(batch_size=7))
            while await relay.unsent_count():
                await relay.relay_once()
            assert await stored_ids(bus) == [f"row-{i}" for i in range(30) if i % 3 != 2]
        finally:
            for db in writers:
                await db.dispose()


def _stored(bus: Bus, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await bus.stored() == n

    return check


if POSTGRES_URL:  # several relays on one table need row locks, which SQLite does not have

    class TestSeveralRelaysOnPostgres:
        @pytest.mark.parametrize("producer", [None, "tool-lookup"])
        async def test_each_row_is_published_by_exactly_one_relay(
            self, bus: Bus, producer: str | None
        ) -> None:
            """Three relays draining one table never take the same row (FOR UPDATE SKIP LOCKED),
            relaying every row or one producer's (whose rows are locked in two ranges)."""
            async with fresh_postgres_database() as url:
                db = Database(url, producer=producer)
                await upgrade(db)
                try:
                    await write_rows(db, bus, 3000)
                    relays = [
                        Relay(db, JetStreamPublisher(bus.js), RelayConfig(batch_size=100))
                        for _ in range(3)
                    ]
                    tasks = [asyncio.create_task(r.run()) for r in relays]
                    await eventually(lambda: _none_unsent(relays[0]), timeout_s=30, what="drain")
                    for t in tasks:
                        t.cancel()
                    assert sum(r.published_total for r in relays) == 3000
                    assert sum(1 for r in relays if r.published_total > 0) >= 2
                    assert len(set(await stored_ids(bus))) == 3000
                finally:
                    await db.dispose()
