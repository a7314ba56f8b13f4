"""The services of the scaling benchmark: an agent making one call to an I/O-bound tool.

The tool waits 50 ms per call (a remote API) with a pool of ``BALLAST_BENCH_TOOL_POOL``
(default 8), so one replica can serve at most 20 calls/s per slot of its pool; a second
replica doubles what the tool can do.
"""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel, JsonValue

from bulkheads import PoolConfig
from contracts import TaskRequest
from services.agent_context import AgentContext
from services.app import Ballast
from services.tools import ToolContext

CALL_S = 0.05
TOOL_POOL = int(os.environ.get("BALLAST_BENCH_TOOL_POOL", "8"))

app = Ballast("scaling")


class Ask(BaseModel):
    n: int


@app.tool(pool=PoolConfig(size=TOOL_POOL, timeout_s=30))
async def remote_api(ctx: ToolContext, args: Ask) -> int:
    await asyncio.sleep(CALL_S)
    return args.n


@app.agent(tools=("remote_api",), pool=PoolConfig(size=128, timeout_s=120))
async def caller(ctx: AgentContext, task: TaskRequest) -> JsonValue:
    return await ctx.tool("remote_api", {"n": 1})
