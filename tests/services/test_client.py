"""The client: many waits share one watcher, and a result that came first is still found."""

from __future__ import annotations

import asyncio

from pydantic import JsonValue

from contracts import TaskRequest, TaskStatus
from contracts.subjects import Stream
from services.agent_context import AgentContext
from services.app import Ballast
from services.client import BallastClient
from services.embedded import EmbeddedNats
from tests.helpers import PRINCIPAL, TEST_KEY, unique
from tests.services.conftest import Hosts


class TestWaiting:
    async def test_fifty_waits_at_once_use_one_consumer_and_late_waits_find_old_results(
        self, own_nats: EmbeddedNats, hosts: Hosts
    ) -> None:
        app = Ballast("t")
        agent = unique("echo")

        @app.agent(agent)
        async def echo(ctx: AgentContext, task: TaskRequest) -> JsonValue:
            return task.task_id

        await hosts.start(own_nats, app.specs)
        tasks = [TaskRequest(agent=agent, principal=PRINCIPAL) for _ in range(50)]
        async with BallastClient(own_nats.url, signer=TEST_KEY) as client:
            waits = [asyncio.create_task(client.wait(t.task_id, timeout_s=30)) for t in tasks]
            for task in tasks:
                await client.submit(task)
            results = await asyncio.gather(*waits)
            info = await client.js.stream_info(Stream.EVENTS.value)
            assert info.state.consumer_count == 1
        assert [r.output for r in results] == [t.task_id for t in tasks]

        async with BallastClient(own_nats.url, signer=TEST_KEY) as late:
            again = await late.wait(tasks[0].task_id, timeout_s=10)
        assert again.status is TaskStatus.COMPLETED
