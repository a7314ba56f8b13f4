"""Declaring R3 streams and buckets while a cluster has too few servers: a replica that
starts before the last NATS node waits for it, and one that would wait forever says
which setting to change."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js import JetStreamContext

from services import breakers, registry
from services.broker import NatsCredentials
from services.buckets import ensure_buckets
from services.errors import BrokerError
from services.examples.support import app
from services.nats_config import render_config, users_for
from services.streams import StreamSettings, ensure_streams, while_electing
from tests.deploy.cluster import LoopbackCluster
from tests.helpers import eventually


@pytest.fixture
async def two_of_three(tmp_path: Path) -> AsyncIterator[tuple[LoopbackCluster, JetStreamContext]]:
    """Nodes 1 and 2 of the three-node cluster; node 3 is not started."""
    users = {u.name: u for u in users_for(app.specs)}
    cluster = LoopbackCluster(tmp_path / "cluster", render_config(list(users.values())))
    admin = users["admin"]
    try:
        await cluster.start(1)
        await cluster.start(2)
        await cluster.until_healthy(1, 2)
        nc = await nats.connect(
            [cluster.nodes[1].url, cluster.nodes[2].url],
            **NatsCredentials(admin.key.seed, admin.inbox).connect_options(),
        )
        try:
            yield cluster, nc.jetstream()
        finally:
            await nc.close()
    finally:
        await cluster.stop()


async def _declare(js: JetStreamContext, ready_s: float) -> None:
    await ensure_streams(js, StreamSettings(replicas=3), ready_s)
    names = {registry.BUCKET, breakers.BUCKET}
    await while_electing(functools.partial(ensure_buckets, js, 3, names), ready_s=ready_s)


async def test_declarations_wait_for_the_node_that_starts_last(
    two_of_three: tuple[LoopbackCluster, JetStreamContext],
) -> None:
    cluster, js = two_of_three
    declaring = asyncio.create_task(_declare(js, ready_s=60))
    await asyncio.sleep(1.5)  # let the declaration meet the missing node at least once
    assert not declaring.done(), "three replicas cannot be placed on two servers"
    await cluster.start(3)
    await asyncio.wait_for(declaring, timeout=60)
    for name in ("BALLAST_TASKS", f"KV_{registry.BUCKET}", f"KV_{breakers.BUCKET}"):
        info = await js.stream_info(name)
        assert info.config.num_replicas == 3, name
        assert info.cluster is not None

        async def placed(name: str = name) -> bool:
            replicas = (await js.stream_info(name)).cluster
            return replicas is not None and len(replicas.replicas or []) == 2

        await eventually(placed, timeout_s=30, what=f"{name} on all three nodes")


async def test_a_missing_node_ends_the_wait_with_what_to_change(
    two_of_three: tuple[LoopbackCluster, JetStreamContext],
) -> None:
    _, js = two_of_three
    with pytest.raises(BrokerError, match="BALLAST_STREAM_REPLICAS"):
        await _declare(js, ready_s=2)


async def test_a_write_that_finds_no_responder_yet_is_tried_again() -> None:
    """A bucket created a moment ago has no leader yet, and a write to it finds no
    responder (seen starting services on a fresh cluster): it is tried again."""
    attempts: list[int] = []

    async def put() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise nats.js.errors.NoStreamResponseError

    await while_electing(put, ready_s=10)
    assert len(attempts) == 3
