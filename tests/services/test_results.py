"""How a waiting step gets its result: from the live subscription, or read back from the stream.

Pure logic: the stream's read-back is answered from memory, as a scan would find it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from nats.aio.client import Client
from nats.js import JetStreamContext

from services.results import ResultWaiter

WAIT_S = 1.0
"""Far below the rescan interval: a step that needs the interval to wake fails the test."""


class StoredResults(ResultWaiter):
    """A waiter whose stream holds ``stored`` (None: nothing yet)."""

    def __init__(self) -> None:
        super().__init__(cast(Client, None), cast(JetStreamContext, None), "agent")
        self.stored: bytes | None = None
        self.reads = 0

    async def read_back(
        self, task_id: str, step_key: str, accept: Callable[[bytes], bool] = lambda _: True
    ) -> bytes | None:
        self.reads += 1
        return self.stored if self.stored is not None and accept(self.stored) else None


async def test_a_result_that_came_before_the_wait_is_taken_without_reading_the_stream() -> None:
    waiter = StoredResults()
    async with waiter.expect("t", "t:1", scan_first=False, accept=lambda d: d == b"ok") as pending:
        pending.deliver(b"another run's")
        pending.deliver(b"ok")
        pending.deliver(b"a late copy")
        assert await asyncio.wait_for(pending.get(), WAIT_S) == b"ok"
    assert waiter.reads == 0


async def test_a_reconnection_makes_every_waiting_step_read_the_stream_at_once() -> None:
    """Results published while the connection was down never reach the subscription."""
    waiter = StoredResults()
    async with (
        waiter.expect("t", "t:1", scan_first=False) as one,
        waiter.expect("t", "t:2", scan_first=False) as two,
    ):
        waits = asyncio.gather(one.get(), two.get())
        await asyncio.sleep(0)  # both start waiting
        waiter.stored = b"published meanwhile"
        waiter.connection_restored()
        assert list(await asyncio.wait_for(waits, WAIT_S)) == [b"published meanwhile"] * 2


async def test_a_result_arriving_while_the_stream_is_read_is_not_lost() -> None:
    waiter = StoredResults()
    async with waiter.expect("t", "t:1", scan_first=False) as pending:
        wait = asyncio.ensure_future(pending.get())
        await asyncio.sleep(0)
        waiter.connection_restored()  # the step reads the stream, which has nothing yet
        await asyncio.sleep(0)
        pending.deliver(b"live")
        assert await asyncio.wait_for(wait, WAIT_S) == b"live"
    assert waiter.reads == 1
