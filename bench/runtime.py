"""The durable runtime: tasks per second and the orchestration cost of one step.

- Tasks/s for the demo's shape: one model step (scripted, zero latency) and three
  tool calls to a no-op tool, agent and tool hosted in one process.
- Overhead per step: tasks making ten no-op tool calls each, run one at a time
  (low load) or arriving steadily at 80% of the host's maximum rate; a step's
  time is from its journal entry being written to its outcome being written (the
  call's whole round trip through outbox, relay, broker, tool host and back).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from pydantic import BaseModel, JsonValue
from sqlmodel import col, select

from bench.common import rate
from bulkheads import PoolConfig
from contracts import Principal, TaskRequest, TaskStatus
from outbox import JournalEntry
from services.agent_context import AgentContext
from services.app import Ballast
from services.client import BallastClient
from services.embedded import EmbeddedNats
from services.host import ServiceHost
from services.keys import resolve_keys
from services.llm import ChatMessage, ModelToolCall, ScriptedModel, ToolDefinition
from services.settings import Settings
from services.tools import ToolContext

PRINCIPAL = Principal(user_id="bench", tenant="bench")


class Args(BaseModel):
    n: int


def _plan(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> str | list[ModelToolCall]:
    return "call the tools"


def _app(tool_calls: int, *, model_step: bool) -> tuple[Ballast, str]:
    app = Ballast("bench")
    tool, agent = f"noop_{uuid.uuid4().hex[:6]}", f"agent_{uuid.uuid4().hex[:6]}"

    @app.tool(tool, pool=PoolConfig(size=64, timeout_s=60))
    async def noop(ctx: ToolContext, args: Args) -> int:
        return args.n

    @app.agent(
        agent,
        model=ScriptedModel("scripted-bench", _plan),
        pool=PoolConfig(size=64, timeout_s=120),
        tools=(tool,),
    )
    async def run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        if model_step:
            await ctx.llm([ChatMessage(role="user", content="go")])
        return [await ctx.tool(tool, {"n": i}) for i in range(tool_calls)]

    return app, agent


@asynccontextmanager
async def _hosted(
    server: EmbeddedNats, database_url: str, *, tool_calls: int, model_step: bool
) -> AsyncIterator[tuple[ServiceHost, BallastClient, str]]:
    """The agent and its tool hosted in this process, a client, and the agent's name."""
    app, agent = _app(tool_calls, model_step=model_step)
    with tempfile.TemporaryDirectory(prefix="ballast-bench-") as tmp:
        settings = Settings(nats_url=server.url, database_url=database_url, data_dir=Path(tmp))
        async with (
            ServiceHost(settings, app.specs, name="bench") as host,
            BallastClient(server.url, signer=resolve_keys(settings).signer) as client,
        ):
            yield host, client, agent


async def task_rate(server: EmbeddedNats, database_url: str, tasks: int) -> float:
    """Demo-shaped tasks (1 model step + 3 tool calls) per second, all submitted at once."""
    async with _hosted(server, database_url, tool_calls=3, model_step=True) as (_, client, agent):
        requests = [TaskRequest(agent=agent, principal=PRINCIPAL) for _ in range(tasks)]
        started = time.perf_counter()
        await _run_all(client, requests, interval_s=0.0)
        return rate(tasks, started)


async def step_overhead_ms(server: EmbeddedNats, database_url: str, tasks: int) -> list[float]:
    """Per-step round trips (ms) of tasks run one at a time, ten tool calls each."""
    async with _hosted(server, database_url, tool_calls=10, model_step=False) as hosted:
        host, client, agent = hosted
        ids = []
        for _ in range(tasks):
            request = TaskRequest(agent=agent, principal=PRINCIPAL)
            await client.run(request, timeout_s=60)
            ids.append(request.task_id)
        return await _tool_steps_ms(host, ids)


async def step_overhead_at_load_ms(
    server: EmbeddedNats, database_url: str, tasks: int, fraction: float
) -> tuple[float, list[float]]:
    """Per-step round trips (ms) at ``fraction`` of the maximum rate, and that maximum.

    The maximum is measured first in the same host: ``tasks`` tasks of ten tool calls
    submitted at once. Then as many tasks are submitted at a steady ``fraction`` of
    that rate (an open loop: a slow step does not slow the arrivals down).
    """
    async with _hosted(server, database_url, tool_calls=10, model_step=False) as hosted:
        host, client, agent = hosted
        burst = [TaskRequest(agent=agent, principal=PRINCIPAL) for _ in range(tasks)]
        started = time.perf_counter()
        await _run_all(client, burst, interval_s=0.0)
        maximum = rate(tasks, started)
        steady = [TaskRequest(agent=agent, principal=PRINCIPAL) for _ in range(tasks)]
        await _run_all(client, steady, interval_s=1 / (maximum * fraction))
        return maximum, await _tool_steps_ms(host, [r.task_id for r in steady])


async def _run_all(client: BallastClient, requests: list[TaskRequest], interval_s: float) -> None:
    """Submit ``requests`` one every ``interval_s`` and wait until all completed."""
    loop = asyncio.get_running_loop()
    waits = [asyncio.create_task(client.wait(r.task_id, timeout_s=600)) for r in requests]
    start = loop.time()
    for i, request in enumerate(requests):
        await asyncio.sleep(max(0.0, start + i * interval_s - loop.time()))
        await client.submit(request)
    results = await asyncio.gather(*waits)
    if any(r.status is not TaskStatus.COMPLETED for r in results):
        raise RuntimeError("a benchmark task did not complete")


async def _tool_steps_ms(host: ServiceHost, task_ids: list[str]) -> list[float]:
    """How long each tool step of these tasks took, from its journal entry to its outcome."""
    async with host.db.session() as session:
        rows = await session.execute(
            select(JournalEntry).where(col(JournalEntry.task_id).in_(task_ids))
        )
        entries = rows.scalars().all()
    return [
        (e.finished_at - e.started_at).total_seconds() * 1000
        for e in entries
        if e.finished_at is not None and e.kind == "tool"
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summary(values: Sequence[float]) -> tuple[float, float]:
    return statistics.median(values), percentile(values, 99)
