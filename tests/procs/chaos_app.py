"""Services for the crash tests, each run as its own process with ``ballast run``.

``chaos_agent`` asks its model, takes a non-deterministic step, and calls the
mutating tool ``record_effect``, which writes one row per call into its own
table. Killing either process at any moment must leave every task completed
with exactly one row per task.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, JsonValue
from sqlalchemy import Column, Integer, String, func, select
from sqlmodel import Field, SQLModel, col

from bulkheads import PoolConfig, RetryPolicy
from contracts import TaskRequest
from contracts.wire import utc_now
from outbox import Database
from outbox.columns import UtcDateTime
from services.agent_context import AgentContext
from services.app import Ballast
from services.llm import ChatMessage, ModelToolCall, ScriptedModel, ToolDefinition
from services.tools import ToolContext

app = Ballast("chaos")


class Effect(SQLModel, table=True):
    """One row per executed call: duplicates would show as two rows with one ref."""

    __tablename__ = "chaos_effect"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    ref: str = Field(sa_column=Column(String(128), nullable=False, index=True))
    call_id: str = Field(sa_column=Column(String(200), nullable=False))
    at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


async def effects_per_ref(database_url: str) -> dict[str, int]:
    """How many effect rows each ref has (1 everywhere means exactly once)."""
    db = Database(database_url)
    try:
        async with db.session() as session:
            query = select(col(Effect.ref), func.count()).group_by(col(Effect.ref))
            return {ref: n for ref, n in (await session.execute(query)).all()}
    finally:
        await db.dispose()


class Order(BaseModel):
    ref: str


@app.tool(pool=PoolConfig(size=8, timeout_s=20), retry=RetryPolicy(max_deliveries=20))
async def record_effect(ctx: ToolContext, args: Order) -> JsonValue:
    await asyncio.sleep(random.uniform(0, 0.02))  # a little I/O, so kills land mid-call
    ctx.session.add(Effect(ref=args.ref, call_id=ctx.idempotency_key, at=utc_now()))
    return {"recorded": args.ref}


def _plan(
    messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]
) -> str | list[ModelToolCall]:
    return "record it"


@app.agent(
    tools=("record_effect",),
    model=ScriptedModel("scripted-triage", _plan),
    pool=PoolConfig(size=16, timeout_s=60),
    retry=RetryPolicy(max_deliveries=20, initial_delay_s=0.1, max_delay_s=1.0),
)
async def chaos_agent(ctx: AgentContext, task: TaskRequest) -> JsonValue:
    plan = await ctx.llm([ChatMessage(role="user", content=f"task {task.task_id}")])
    lucky = await ctx.step("draw", random.random)
    done = await ctx.tool("record_effect", {"ref": task.task_id})
    return {"plan": plan.content, "lucky": lucky, "done": done}


class Nap(BaseModel):
    ref: str
    seconds: float


@app.tool(pool=PoolConfig(size=4, timeout_s=60))
async def slow_effect(ctx: ToolContext, args: Nap) -> JsonValue:
    """A long call, to stop a service while it runs."""
    await asyncio.sleep(args.seconds)
    ctx.session.add(Effect(ref=args.ref, call_id=ctx.idempotency_key, at=utc_now()))
    return {"recorded": args.ref}
