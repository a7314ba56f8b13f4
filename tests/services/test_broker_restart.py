"""A restart of the broker loses nothing: every task completes, every effect happens once."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from contracts import TaskRequest, TaskStatus
from services.embedded import EmbeddedNats
from services.examples.support import Ticket, app
from tests.helpers import PRINCIPAL
from tests.services.conftest import Hosts


def support_task(i: int) -> TaskRequest:
    return TaskRequest(
        task_id=f"restart-{i}",
        agent="triage",
        input={"customer": f"c{i}", "message": f"checkout error number {i}"},
        principal=PRINCIPAL,
    )


class TestBrokerRestart:
    async def test_tasks_survive_a_killed_and_restarted_nats_server(
        self, own_nats: EmbeddedNats, hosts: Hosts
    ) -> None:
        """30 support tasks in flight when nats-server is killed (SIGKILL) and started again:
        all 30 complete and exactly 30 tickets exist."""
        host = await hosts.start(own_nats, app.specs)
        client = await hosts.client(own_nats)
        tasks = [support_task(i) for i in range(30)]
        for task in tasks[:15]:
            await client.submit(task)
        await asyncio.sleep(0.2)
        await own_nats.restart(hard=True)
        for task in tasks[15:]:
            await client.submit(task)

        results = await asyncio.gather(*(client.wait(t.task_id, timeout_s=90) for t in tasks))
        assert {r.status for r in results} == {TaskStatus.COMPLETED}
        async with host.db.session() as session:
            tickets = await session.scalar(select(func.count()).select_from(Ticket))
        assert tickets == 30
