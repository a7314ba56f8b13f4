"""The compose file's NATS cluster, for real: three nats-server processes on loopback,
streams with three replicas, every example service under its own NATS user; one
node is killed with SIGKILL and the tasks still complete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import nats
import pytest

from contracts import TaskRequest, TaskStatus
from contracts.subjects import Stream
from services.broker import NatsCredentials
from services.client import BallastClient
from services.examples.support import app
from services.host import ServiceHost
from services.nats_config import User, render_config, users_for
from tests.deploy.cluster import LoopbackCluster
from tests.helpers import PRINCIPAL, TEST_KEY, settings_for


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[LoopbackCluster, dict[str, User]]]:
    users = {u.name: u for u in users_for(app.specs)}
    running = LoopbackCluster(tmp_path / "cluster", render_config(list(users.values())))
    try:
        await running.start_all()
        yield running, users
    finally:
        await running.stop()


def _task(n: int) -> TaskRequest:
    return TaskRequest(
        agent="triage",
        input={"customer": "acme", "message": f"checkout error 502, report {n}"},
        principal=PRINCIPAL.model_copy(update={"scopes": ("tickets:write",)}),
    )


async def test_the_compose_cluster_runs_the_demo_with_r3_streams_and_survives_a_killed_node(
    cluster: tuple[LoopbackCluster, dict[str, User]], database_url: str, tmp_path: Path
) -> None:
    running, users = cluster
    async with AsyncExitStack() as stack:
        for spec in app.specs:
            user = users[spec.service]
            settings = settings_for(
                running.urls,
                database_url,
                tmp_path,
                stream_replicas=3,
                nats_nkey_seed=user.key.seed,
                nats_inbox_prefix=user.inbox,
            )
            await stack.enter_async_context(ServiceHost(settings, [spec], name=spec.service))
        client_user = users["client"]
        client = await stack.enter_async_context(
            BallastClient(
                running.urls,
                signer=TEST_KEY,
                credentials=NatsCredentials(client_user.key.seed, client_user.inbox),
            )
        )
        admin_user = users["admin"]
        admin = await nats.connect(
            [running.nodes[2].url, running.nodes[3].url],
            **NatsCredentials(admin_user.key.seed, admin_user.inbox).connect_options(),
        )
        stack.push_async_callback(admin.close)
        for stream in (Stream.TASKS, Stream.TOOLS, Stream.RESULTS, Stream.EVENTS):
            info = await admin.jetstream().stream_info(stream.value)
            assert info.config.num_replicas == 3, stream
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2, "a leader and two replicas"
        for bucket in ("ballast_agents", "ballast_breakers", "ballast_approvals"):
            kv = await admin.jetstream().stream_info(f"KV_{bucket}")
            assert kv.config.num_replicas == 3, f"{bucket} would go offline with its node"

        first = await client.run(_task(1), timeout_s=60)
        assert first.status is TaskStatus.COMPLETED, first.error

        await running.kill(1)
        results = [await client.run(_task(n), timeout_s=60) for n in range(2, 7)]
        assert [r.status for r in results] == [TaskStatus.COMPLETED] * 5
        events = await admin.jetstream().stream_info(Stream.EVENTS.value)
        assert events.state.messages > 0, "the surviving nodes still serve the streams"
