"""The deployment under fire: a 3-node NATS cluster on loopback, PostgreSQL, two replicas
of an agent service and two of a tool service as separate 'ballast run' processes, each
under its own NATS user. 1,000 tasks; in the middle one NATS node and one replica of
each service are killed with SIGKILL. Every task completes, every side effect happens
exactly once, and the dead-letter queues stay empty."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client

from contracts import TaskRequest, TaskStatus
from contracts.subjects import Stream
from outbox.schema import migrate
from services.broker import NatsCredentials
from services.client import BallastClient
from services.dead_letters import dead_letter_counts
from services.nats_config import User, render_config, users_for
from tests.conftest import POSTGRES_URL, fresh_postgres_database
from tests.deploy.cluster import LoopbackCluster
from tests.helpers import PRINCIPAL, TEST_KEY, eventually, subject_count
from tests.procs.chaos_app import app, effects_per_ref
from tests.services.test_crashes import Service, service_env

T = TypeVar("T")
TASKS = 1000
DONE = "ballast.event.task.completed"


@pytest.fixture
async def postgres() -> AsyncIterator[str]:
    assert POSTGRES_URL, "the cluster test runs on PostgreSQL: set BALLAST_TEST_POSTGRES_URL"
    async with fresh_postgres_database() as url:
        await migrate(url)  # as 'ballast db upgrade' before a deployment
        yield url


async def _after_election(read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, retried while the streams elect new leaders after the node was killed."""
    answers: list[T] = []

    async def answered() -> bool:
        try:
            answers.append(await read())
        except nats.errors.TimeoutError:
            return False
        return True

    await eventually(answered, timeout_s=30, what="the streams to elect new leaders")
    return answers[-1]


async def _done(admin: Client, n: int) -> bool:
    return await subject_count(admin.jetstream(), Stream.EVENTS.value, DONE) >= n


# It runs on PostgreSQL (several processes share one database), so it exists where the
# PostgreSQL tests run: CI always sets BALLAST_TEST_POSTGRES_URL.
if POSTGRES_URL:

    @pytest.mark.chaos
    @pytest.mark.timeout(600)
    async def test_a_thousand_tasks_survive_a_killed_node_and_killed_replicas(
        postgres: str, tmp_path: Path
    ) -> None:
        users = {u.name: u for u in users_for(app.specs)}
        cluster = LoopbackCluster(tmp_path / "cluster", render_config(list(users.values())))
        await cluster.start_all()
        replicas: list[Service] = []
        try:
            for service, target in (
                ("agent-chaos_agent", "tests.procs.chaos_app:chaos_agent"),
                ("tool-record_effect", "tests.procs.chaos_app:record_effect"),
            ):
                user = users[service]
                for i in (1, 2):
                    env = service_env_for(cluster, postgres, tmp_path / f"{service}-{i}", user)
                    replicas.append(Service(target, env, tmp_path / f"{service}-{i}.log"))
            for replica in replicas:
                await replica.start()
            admin_user = users["admin"]
            admin = await nats.connect(
                [cluster.nodes[2].url, cluster.nodes[3].url],
                max_reconnect_attempts=-1,
                **NatsCredentials(admin_user.key.seed, admin_user.inbox).connect_options(),
            )
            client_user = users["client"]
            async with BallastClient(
                cluster.urls,
                signer=TEST_KEY,
                credentials=NatsCredentials(client_user.key.seed, client_user.inbox),
            ) as client:
                for stream, consumer in (
                    (Stream.TASKS, "agent-chaos_agent"),
                    (Stream.TOOLS, "tool-record_effect"),
                ):

                    async def ready(stream: Stream = stream, consumer: str = consumer) -> bool:
                        try:
                            await admin.jetstream().consumer_info(stream.value, consumer)
                        except (
                            nats.js.errors.NotFoundError,
                            # Not answered yet: the new cluster may still be electing
                            # the stream's or the consumer's leader.
                            nats.errors.TimeoutError,
                            nats.js.errors.ServiceUnavailableError,
                        ):
                            return False
                        return True

                    await eventually(ready, timeout_s=60, what=f"{consumer} to start")
                tasks = [
                    TaskRequest(agent="chaos_agent", principal=PRINCIPAL) for _ in range(TASKS)
                ]
                await asyncio.gather(*(client.submit(t) for t in tasks))

                await eventually(lambda: _done(admin, TASKS // 4), timeout_s=240, what="progress")
                exited = [r.log.name for r in replicas if r.proc and r.proc.returncode is not None]
                assert not exited, f"replicas exited before the kills; see {exited}"
                # Counted just before the kills: counted after them, the election of new
                # leaders (seconds) gave a fast machine time to finish every task.
                done_at_kills = await subject_count(admin.jetstream(), Stream.EVENTS.value, DONE)
                await cluster.kill(1)
                await replicas[0].kill()  # one agent replica
                await replicas[2].kill()  # one tool replica
                assert done_at_kills < TASKS, "the kills landed while tasks were running"

                results = await asyncio.gather(
                    *(client.wait(t.task_id, timeout_s=400) for t in tasks)
                )
                dead = await _after_election(lambda: dead_letter_counts(admin.jetstream()))
            await admin.close()
        finally:
            for replica in replicas:
                await replica.stop()
            await cluster.stop()

        assert [r.status for r in results] == [TaskStatus.COMPLETED] * TASKS
        assert dead == {}, f"dead letters: {dead}"
        per_task = await effects_per_ref(postgres)
        assert set(per_task) == {t.task_id for t in tasks}, "every task had its effect"
        assert set(per_task.values()) == {1}, "no effect happened twice"


def service_env_for(
    cluster: LoopbackCluster, database_url: str, data: Path, user: User
) -> dict[str, str]:
    """A replica's environment: the cluster, three replicas per stream, its own NATS user."""
    return service_env(cluster.urls, database_url, data) | {
        "BALLAST_NATS_NKEY_SEED": user.key.seed,
        "BALLAST_NATS_INBOX_PREFIX": user.inbox,
        "BALLAST_STREAM_REPLICAS": "3",
    }
