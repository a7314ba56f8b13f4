"""Flow-controlled pulling: a replica asks only for what its pool can start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import pytest
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsMessage
from nats.js import api

from services.embedded import EmbeddedNats
from services.pull_flow import LOST_AFTER_S, PullCredit, flow_controlled
from tests.helpers import eventually, unique


class TestPullCredit:
    def test_asks_for_the_whole_pool_at_first(self) -> None:
        credit = PullCredit(pool=8, expires_s=1.0)
        assert credit.to_ask(0.0) == 8
        assert credit.to_ask(0.0) == 0, "everything free is already asked for"

    def test_never_asks_beyond_what_is_held_and_asked(self) -> None:
        credit = PullCredit(pool=8, expires_s=1.0)
        credit.to_ask(0.0)
        for _ in range(8):
            credit.received()
        assert credit.to_ask(0.1) == 0, "the pool is full"
        for _ in range(3):
            credit.finished()
        assert credit.to_ask(0.1) == 3, "nothing asked for: whatever is free"
        credit.received()
        credit.finished()
        assert credit.to_ask(0.2) == 0, "a request is open and fewer than half are free"
        credit.finished()
        credit.finished()
        assert credit.to_ask(0.3) == 0, "3 of 8 free"
        credit.finished()
        assert credit.to_ask(0.4) == 4, "half the pool free: ask for it"
        assert credit.held + credit.asked == 8

    def test_an_expired_request_gives_back_what_it_did_not_deliver(self) -> None:
        credit = PullCredit(pool=4, expires_s=1.0)
        credit.to_ask(0.0)
        credit.received()
        credit.ended(undelivered=3)
        assert credit.asked == 0
        assert credit.to_ask(1.0) == 3

    def test_a_request_ended_without_a_count_ends_all_asked(self) -> None:
        credit = PullCredit(pool=4, expires_s=1.0)
        credit.to_ask(0.0)
        credit.ended(undelivered=None)
        assert credit.to_ask(0.1) == 4

    def test_a_request_whose_expiry_never_came_counts_as_gone(self) -> None:
        credit = PullCredit(pool=4, expires_s=1.0)
        credit.to_ask(0.0)
        assert credit.to_ask(1.0 + LOST_AFTER_S - 0.01) == 0
        assert credit.to_ask(1.0 + LOST_AFTER_S + 0.01) == 4


def test_only_a_concurrent_pull_subscriber_can_be_flow_controlled() -> None:
    broker = NatsBroker()
    subscriber = broker.subscriber("s", stream=JStream("s"), pull_sub=PullSub(batch_size=1))
    with pytest.raises(TypeError, match="max_workers"):
        flow_controlled(subscriber)


def test_flow_control_needs_a_durable_consumer() -> None:
    broker = NatsBroker()
    subscriber = broker.subscriber(
        "s", stream=JStream("s"), pull_sub=PullSub(batch_size=1), max_workers=2
    )
    with pytest.raises(TypeError, match="durable"):
        flow_controlled(subscriber)


class _Replica:
    """A FastStream broker whose one flow-controlled handler blocks while ``hold`` is clear."""

    def __init__(self, name: str, handled: list[tuple[str, bytes]]) -> None:
        self.name = name
        self.handled = handled
        self.hold = asyncio.Event()
        self.started = 0
        self.attempts: list[int] = []
        """The delivery count of each message it started."""
        self.release_at_stop = True
        """Whether stopping lets the held handlers finish (else they are cancelled)."""

    async def handle(self, msg: NatsMessage) -> None:
        self.started += 1
        self.attempts.append(msg.raw_message.metadata.num_delivered or 0)
        try:
            await self.hold.wait()
        except asyncio.CancelledError:  # stopped past the grace period: hand it back
            await msg.nack()
            raise
        self.handled.append((self.name, msg.body))
        await msg.ack()


class _LogContexts(_Replica):
    """Handles at once, keeping the log context FastStream set up for each message."""

    def __init__(self, name: str, handled: list[tuple[str, bytes]]) -> None:
        super().__init__(name, handled)
        self.hold.set()
        self.broker: NatsBroker | None = None
        self.log_contexts: list[dict[str, str]] = []

    async def handle(self, msg: NatsMessage) -> None:
        assert self.broker is not None
        self.log_contexts.append(dict(self.broker.context.get_local("log_context")))
        await super().handle(msg)


@asynccontextmanager
async def _replica(
    server: EmbeddedNats,
    stream: str,
    replica: _Replica,
    *,
    pool: int,
    timeout_s: float,
    grace_s: float = 10.0,
) -> AsyncIterator[NatsBroker]:
    broker = NatsBroker(server.url, graceful_timeout=grace_s, apply_types=False)
    subscriber = broker.subscriber(
        stream,
        stream=JStream(stream, declare=False),
        durable=stream,
        config=api.ConsumerConfig(ack_wait=30, max_ack_pending=100),
        pull_sub=PullSub(batch_size=1, timeout=timeout_s),
        max_workers=pool,
        ack_policy=AckPolicy.MANUAL,
        decoder=_raw,
    )
    subscriber(replica.handle)
    flow_controlled(subscriber)
    await broker.start()
    try:
        yield broker
    finally:
        if replica.release_at_stop:
            replica.hold.set()
        await broker.stop()


async def _raw(msg: NatsMessage) -> NatsMessage:
    return msg


@asynccontextmanager
async def _stream(server: EmbeddedNats) -> AsyncIterator[tuple[str, Any]]:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    name = unique("flow")
    await js.add_stream(name=name, subjects=[name])
    try:
        yield name, js
    finally:
        await js.delete_stream(name)
        await nc.close()


class TestFlowControlledPull:
    async def test_each_message_logs_the_subject_and_stream(
        self, nats_server: EmbeddedNats
    ) -> None:
        """The subject is kept while pulling, not worked out again for every message."""
        handled: list[tuple[str, bytes]] = []
        replica = _LogContexts("a", handled)
        async with (
            _stream(nats_server) as (name, js),
            _replica(nats_server, name, replica, pool=2, timeout_s=5.0) as broker,
        ):
            replica.broker = broker
            for i in range(3):
                await js.publish(name, str(i).encode())

            async def all_handled() -> bool:
                return len(handled) == 3

            await eventually(all_handled, timeout_s=5, what="three messages handled")
        assert [(c["subject"], c["stream"]) for c in replica.log_contexts] == [(name, name)] * 3
        assert len({c["message_id"] for c in replica.log_contexts}) == 3

    async def test_a_replica_holds_no_more_than_its_pool(self, nats_server: EmbeddedNats) -> None:
        """With a pool of 2 busy, 8 more messages wait at the server, not in the replica."""
        handled: list[tuple[str, bytes]] = []
        busy = _Replica("a", handled)
        async with (
            _stream(nats_server) as (name, js),
            _replica(nats_server, name, busy, pool=2, timeout_s=5.0),
        ):
            for i in range(10):
                await js.publish(name, str(i).encode())

            async def pool_full() -> bool:
                return busy.started == 2

            await eventually(pool_full, timeout_s=5, what="two handlers started")
            await asyncio.sleep(0.3)  # time for a third message to arrive, were it asked for
            info = await js.consumer_info(name, name)
            assert info.num_ack_pending == 2
            assert info.num_pending == 8
            busy.hold.set()

            async def all_handled() -> bool:
                return len(handled) == 10

            await eventually(all_handled, timeout_s=5, what="ten messages handled")
        assert sorted(int(body) for _, body in handled) == list(range(10))

    async def test_a_message_to_an_idle_replica_does_not_wait_for_a_batch(
        self, nats_server: EmbeddedNats
    ) -> None:
        """A pool of 8 asks for 8; one message arrives and runs long before the 5 s expiry."""
        handled: list[tuple[str, bytes]] = []
        idle = _Replica("a", handled)
        idle.hold.set()
        async with (
            _stream(nats_server) as (name, js),
            _replica(nats_server, name, idle, pool=8, timeout_s=5.0),
        ):
            await asyncio.sleep(0.2)  # the replica's request is open at the server
            sent = time.monotonic()
            await js.publish(name, b"one")

            async def one_handled() -> bool:
                return len(handled) == 1

            await eventually(one_handled, timeout_s=5, what="the message handled")
            assert time.monotonic() - sent < 1.0

    async def test_a_message_arriving_while_a_replica_stops_goes_to_another_at_once(
        self, nats_server: EmbeddedNats
    ) -> None:
        """A stopping replica's open request still brings a message: it is handed back, and
        the next replica runs it well before the 30 s ack wait would have let it."""
        handled: list[tuple[str, bytes]] = []
        first, second = _Replica("first", handled), _Replica("second", handled)
        second.hold.set()
        async with (
            _stream(nats_server) as (name, js),
            _replica(nats_server, name, first, pool=2, timeout_s=10.0) as broker,
        ):
            await js.publish(name, b"in flight")

            async def running() -> bool:
                return first.started == 1

            await eventually(running, timeout_s=5, what="the first message started")
            stopping = asyncio.create_task(broker.stop())
            subscriber = broker.subscribers[0]

            async def stopped_taking() -> bool:
                return not subscriber.running

            await eventually(stopped_taking, timeout_s=5, what="the replica stopping")
            await js.publish(name, b"late")
            async with _replica(nats_server, name, second, pool=2, timeout_s=10.0):

                async def late_handled() -> bool:
                    return ("second", b"late") in handled

                await eventually(late_handled, timeout_s=5, what="the late message")
            first.hold.set()
            await stopping
        assert sorted(handled) == [("first", b"in flight"), ("second", b"late")]

    async def test_a_message_handed_back_at_stop_goes_elsewhere_not_round_again(
        self, nats_server: EmbeddedNats
    ) -> None:
        """Past the grace period the handler hands its message back (nak) while the replica
        still had a pull request open: the message must not come back to it again and again
        (each time a delivery spent), but go to the next replica as its second delivery."""
        handled: list[tuple[str, bytes]] = []
        first, second = _Replica("first", handled), _Replica("second", handled)
        first.release_at_stop = False
        second.hold.set()
        async with _stream(nats_server) as (name, js):
            async with _replica(nats_server, name, first, pool=4, timeout_s=10.0, grace_s=0.3):
                await js.publish(name, b"long")

                async def running() -> bool:
                    return first.started == 1

                await eventually(running, timeout_s=5, what="the message started")
            async with _replica(nats_server, name, second, pool=4, timeout_s=10.0):

                async def handled_elsewhere() -> bool:
                    return ("second", b"long") in handled

                await eventually(handled_elsewhere, timeout_s=5, what="the message elsewhere")
        assert first.attempts == [1]
        assert second.attempts == [2]

    async def test_nothing_is_asked_while_the_broker_is_away(self, own_nats: EmbeddedNats) -> None:
        """Handlers finish while nats-server is down. Requests sent then would wait in
        nats-py's buffer and all go out on reconnect, each asking for the same free slots:
        the replica would then run more than its pool. Once the server is back, it runs
        exactly its pool of 2 and the rest wait at the server."""
        handled: list[tuple[str, bytes]] = []
        replica = _Replica("a", handled)
        expires_s = 0.5
        async with (
            _stream(own_nats) as (name, js),
            _replica(own_nats, name, replica, pool=2, timeout_s=expires_s),
        ):
            for i in range(20):
                await js.publish(name, str(i).encode())

            async def pool_full() -> bool:
                return replica.started == 2

            await eventually(pool_full, timeout_s=5, what="two handlers started")
            await own_nats.kill()
            replica.hold.set()  # both finish while the server is away

            async def both_handled() -> bool:
                return len(handled) == 2

            await eventually(both_handled, timeout_s=5, what="the two handled")
            # Several request periods pass without a server (each would have sent one).
            await asyncio.sleep(4 * (expires_s + LOST_AFTER_S))
            replica.hold.clear()
            await own_nats.start()

            async def pool_full_again() -> bool:
                return replica.started >= 4

            await eventually(pool_full_again, timeout_s=20, what="two more started")
            await asyncio.sleep(1.0)  # time for more to arrive, were they asked for
            assert replica.started == 4, f"{replica.started - 2} started after the outage"
            info = await js.consumer_info(name, name)
            assert info.num_ack_pending == 2
