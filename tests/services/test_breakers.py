"""Circuit breakers shared by replicas through NATS KV."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial

import nats
import pytest
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlmodel import col, select

from bulkheads import BreakerPolicy, CircuitOpenError, RetryPolicy
from contracts import BreakerChanged, BreakerState, ErrorCode, ToolResult, ToolStatus
from contracts.subjects import Stream, result_subject
from outbox import Database, OutboxMessage
from services.app import Ballast
from services.breakers import SharedBreakers
from services.embedded import EmbeddedNats
from services.tools import ToolContext
from tests.helpers import eventually, subject_count, unique
from tests.services.callers import caller_call, publish_call
from tests.services.conftest import Hosts

POLICY = BreakerPolicy(window=4, minimum_calls=2, failure_rate=0.5, open_for_s=1.0)


async def down() -> str:
    raise ConnectionError("dependency down")


@pytest.fixture
async def replicas(
    nats_server: EmbeddedNats, database_url: str
) -> AsyncIterator[tuple[SharedBreakers, SharedBreakers, Database]]:
    db = Database(database_url)
    connections = [await nats.connect(nats_server.url) for _ in range(2)]
    a, b = (SharedBreakers(nc.jetstream(), db, POLICY) for nc in connections)
    await a.start()
    await b.start()
    yield a, b, db
    await a.stop()
    await b.stop()
    for nc in connections:
        await nc.close()
    await db.dispose()


class TestSharedState:
    async def test_a_breaker_opened_by_one_replica_stops_the_other(
        self, replicas: tuple[SharedBreakers, SharedBreakers, Database]
    ) -> None:
        """Replica A sees two failures and opens the breaker; replica B, which saw none, fails
        fast from then on without calling; after the pause one trial closes it for both."""
        a, b, db = replicas
        name = f"tool.{unique('x')}"
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await a.call(name, down, counts_as_failure=lambda exc: True)
        calls_on_b = 0

        async def work() -> str:
            nonlocal calls_on_b
            calls_on_b += 1
            return "ok"

        async def b_rejects() -> bool:
            try:
                await b.call(name, work, counts_as_failure=lambda exc: True)
            except CircuitOpenError:
                return True
            return False

        await eventually(b_rejects, timeout_s=5, what="replica B to see the open breaker")
        assert calls_on_b <= 1  # at most one call raced the news
        rejected_at = calls_on_b

        await asyncio.sleep(POLICY.open_for_s)
        outcomes = await asyncio.gather(
            a.call(name, work, counts_as_failure=lambda exc: True),
            b.call(name, work, counts_as_failure=lambda exc: True),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["CircuitOpenError", "str"]
        assert calls_on_b == rejected_at + 1, "exactly one trial call"
        await eventually(
            lambda: _closed(b, name), timeout_s=5, what="the successful trial to close it for B"
        )
        assert await b.call(name, work, counts_as_failure=lambda exc: True) == "ok"

        async def announced() -> bool:
            changes = await _changes(db, name)
            return {
                (BreakerState.CLOSED, BreakerState.OPEN),
                (BreakerState.OPEN, BreakerState.HALF_OPEN),
                (BreakerState.HALF_OPEN, BreakerState.CLOSED),
            } <= set(changes)

        await eventually(announced, timeout_s=5, what="the three state changes as events")


async def _changes(db: Database, name: str) -> list[tuple[BreakerState, BreakerState]]:
    async with db.session() as session:
        rows = await session.execute(
            select(OutboxMessage).where(col(OutboxMessage.subject).like("ballast.event.breaker.%"))
        )
        changes = [BreakerChanged.model_validate_json(r.payload) for r in rows.scalars()]
    return [(c.previous, c.state) for c in changes if c.breaker == name]


async def _closed(breakers: SharedBreakers, name: str) -> bool:
    return breakers.breaker(name).state is BreakerState.CLOSED


class Ping(BaseModel):
    text: str


class TestToolHost:
    async def test_an_open_breaker_fails_calls_fast_without_running_the_tool(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        app = Ballast("t")
        name = unique("fragile")
        runs = 0

        @app.tool(name, retry=RetryPolicy(max_deliveries=1))
        async def fragile(ctx: ToolContext, args: Ping) -> str:
            nonlocal runs
            runs += 1
            raise ConnectionError("backend down")

        await hosts.start(
            nats_server, app.specs, breaker_minimum_calls=2, breaker_window=2, breaker_open_s=60
        )
        client = await hosts.client(nats_server)
        task = unique("b")
        for i in range(4):
            await publish_call(client.js, caller_call(name, call_id=f"{task}:{i}"))
            await eventually(
                partial(_answered, client.js, task, i + 1), what=f"answer {i + 1}", timeout_s=10
            )
        assert runs == 2, "after two failures the breaker opened and the tool was not called"
        raw = await client.js.get_last_msg(Stream.RESULTS.value, result_subject("caller", task))
        last = ToolResult.model_validate_json(raw.data or b"")
        assert last.status is ToolStatus.ERROR
        assert last.error is not None
        assert last.error.code is ErrorCode.CIRCUIT_OPEN


async def _answered(js: JetStreamContext, task: str, n: int) -> bool:
    return await subject_count(js, Stream.RESULTS.value, result_subject("caller", task)) == n
