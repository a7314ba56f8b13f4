"""How fast ``ballast trace`` answers for a task of 200 steps.

One task is run for real (agent and tool hosted, journaled, 200 steps: model
steps, tool calls and local steps in turn), then its trace is read from the
database and rendered as the command prints it, again and again.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from pydantic import BaseModel, JsonValue
from rich.console import Console

from bench.runtime import PRINCIPAL
from bulkheads import PoolConfig
from contracts import TaskRequest, TaskStatus
from outbox import Database
from services.agent_context import AgentContext
from services.app import Ballast
from services.cli.observe import render
from services.client import BallastClient
from services.embedded import EmbeddedNats
from services.host import ServiceHost
from services.keys import resolve_keys
from services.llm import ChatMessage, ScriptedModel
from services.settings import Settings
from services.tools import ToolContext
from services.trace import trace

STEPS = 200
READS = 20


class Note(BaseModel):
    text: str


def _app() -> tuple[Ballast, str]:
    app = Ballast("bench-trace")
    tool, agent = f"note_{uuid.uuid4().hex[:6]}", f"long_{uuid.uuid4().hex[:6]}"

    @app.tool(tool, pool=PoolConfig(size=8))
    async def note(ctx: ToolContext, args: Note) -> str:
        return args.text.upper()

    @app.agent(
        agent,
        model=ScriptedModel("scripted-bench", lambda m, t: "next"),
        pool=PoolConfig(size=2, timeout_s=600),
        tools=(tool,),
    )
    async def long_run(ctx: AgentContext, task: TaskRequest) -> JsonValue:
        for i in range(STEPS // 4):
            await ctx.llm([ChatMessage(role="user", content=f"step {i}")])
            await ctx.tool(tool, {"text": f"a{i}"})
            await ctx.step("think", f"thought {i}".upper)
            await ctx.tool(tool, {"text": f"b{i}"})
        return "done"

    return app, agent


async def _record(server: EmbeddedNats, database_url: str) -> str:
    app, agent = _app()
    with tempfile.TemporaryDirectory(prefix="ballast-bench-") as tmp:
        settings = Settings(nats_url=server.url, database_url=database_url, data_dir=Path(tmp))
        async with (
            ServiceHost(settings, app.specs, name="bench-trace"),
            BallastClient(server.url, signer=resolve_keys(settings).signer) as client,
        ):
            request = TaskRequest(agent=agent, principal=PRINCIPAL)
            result = await client.run(request, timeout_s=600)
    if result.status is not TaskStatus.COMPLETED:
        raise RuntimeError(f"the 200-step task ended {result.status}")
    return request.task_id


async def trace_ms(server: EmbeddedNats, database_url: str) -> tuple[float, float]:
    """Median ms to read the trace of a 200-step task, and to read and render it."""
    task_id = await _record(server, database_url)
    db = Database(database_url)
    reads, renders = [], []
    try:
        for _ in range(READS):
            started = time.perf_counter()
            found = await trace(db, task_id)
            read = time.perf_counter()
            if found is None or len(found.steps) != STEPS:
                raise RuntimeError(f"the trace of {task_id} does not hold {STEPS} steps")
            Console(file=io.StringIO(), width=120).print(render(found))
            reads.append((read - started) * 1000)
            renders.append((time.perf_counter() - started) * 1000)
    finally:
        await db.dispose()
    return statistics.median(reads), statistics.median(renders)
