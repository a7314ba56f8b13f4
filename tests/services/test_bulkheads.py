"""Bulkheads: a saturated tool does not slow another tool down."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

from pydantic import BaseModel

from bulkheads import PoolConfig
from contracts.subjects import Stream, result_subject, tool_service
from services.app import Ballast
from services.embedded import EmbeddedNats
from services.tools import ToolContext
from tests.helpers import eventually, unique
from tests.services.callers import caller_call, publish_call
from tests.services.conftest import Hosts


class Job(BaseModel):
    text: str


class TestIsolation:
    async def test_a_saturated_tool_does_not_slow_another(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        """40 slow calls (0.4 s each, pool of 2: 8 s of work) queue up on one tool; calls of a
        second tool published meanwhile are answered at their own speed, and the slow tool
        never runs more than its pool allows."""
        app = Ballast("t")
        slow_name, fast_name, agent = unique("slow"), unique("fast"), unique("agent")
        running = peak = 0

        @app.tool(slow_name, pool=PoolConfig(size=2, timeout_s=5))
        async def slow(ctx: ToolContext, args: Job) -> str:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.4)
            running -= 1
            return args.text

        @app.tool(fast_name, pool=PoolConfig(size=2, timeout_s=5))
        async def fast(ctx: ToolContext, args: Job) -> str:
            return args.text

        await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        task = unique("t")
        for i in range(40):
            await publish_call(
                client.js, caller_call(slow_name, call_id=f"{task}s:{i}", agent=agent)
            )

        results = client.js
        fast_subject = result_subject(agent, f"{task}f")
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def on_result(msg: object) -> None:
            arrived.put_nowait(time.perf_counter())

        sub = await client.nc.subscribe(fast_subject, cb=on_result)
        latencies = []
        for i in range(10):
            sent = time.perf_counter()
            await publish_call(results, caller_call(fast_name, call_id=f"{task}f:{i}", agent=agent))
            latencies.append(await asyncio.wait_for(arrived.get(), 5) - sent)
        await sub.unsubscribe()

        slow_info = await client.js.consumer_info(Stream.TOOLS.value, tool_service(slow_name))
        assert slow_info.num_pending + slow_info.num_ack_pending > 20, "slow tool still saturated"
        assert slow_info.config.max_ack_pending == PoolConfig(size=2).max_ack_pending
        assert statistics.median(latencies) < 0.25, latencies
        assert max(latencies) < 1.0, latencies
        assert peak <= 2


class TestReplicas:
    async def test_replicas_each_fill_their_own_pool(
        self, hosts: Hosts, nats_server: EmbeddedNats
    ) -> None:
        """Two replicas of a tool with a pool of 2 run four calls at once between them: the
        shared consumer admits a pool per replica, not one pool split between replicas."""
        app = Ballast("t")
        name, agent = unique("io"), unique("agent")
        running = peak = done = 0
        both_pools_full = asyncio.Event()

        @app.tool(name, pool=PoolConfig(size=2, timeout_s=5))
        async def io_bound(ctx: ToolContext, args: Job) -> str:
            nonlocal running, peak, done
            running += 1
            peak = max(peak, running)
            if running == 4:
                both_pools_full.set()
            # Hold the slot until four calls run at once (or give up: then the peak shows it).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(both_pools_full.wait(), 2)
            running -= 1
            done += 1
            return args.text

        for _ in range(2):
            await hosts.start(nats_server, app.specs)
        client = await hosts.client(nats_server)
        task = unique("t")
        for i in range(12):
            await publish_call(client.js, caller_call(name, call_id=f"{task}:{i}", agent=agent))

        async def all_done() -> bool:
            return done == 12

        await eventually(all_done, timeout_s=10, what="12 calls")
        assert peak == 4
